"""E-utilities client against a local HTTP server replaying recorded XML (never the internet)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from dp_helpers import EXAMPLES

from healthnav.datapipe.pubmed import EutilsClient, EutilsError, RateLimiter
from healthnav.datapipe.readers.pubmed_xml import read_pubmed

pytestmark = pytest.mark.unit
RECORDED = (EXAMPLES / "pubmed_efetch.xml").read_bytes()


class _Server:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self.failures: list[int] = []  # status codes to answer before succeeding


@pytest.fixture
def eutils() -> Iterator[tuple[str, _Server]]:
    state = _Server()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            params = parse_qs(body)
            state.requests.append((self.path, params))
            if state.failures:
                self.send_response(state.failures.pop(0))
                self.end_headers()
                return
            if self.path.endswith("esearch.fcgi"):
                start = int(params["retstart"][0])
                ids = ["38000001", "38000002", "38000003"][start : start + int(params["retmax"][0])]
                payload = json.dumps({"esearchresult": {"count": "3", "idlist": ids}}).encode()
            else:
                payload = RECORDED
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", state
    server.shutdown()
    server.server_close()


def test_download_identifies_itself_backs_off_and_resumes(
    eutils: tuple[str, _Server], tmp_path: Path
) -> None:
    url, state = eutils
    sleeps: list[float] = []
    state.failures = [429, 503]
    with EutilsClient(email="dev@example.org", api_key="k123", base_url=url, sleep=sleeps.append) as client:
        files = client.download("chest pain", tmp_path, max_records=3, batch_size=2)
    assert [f.name for f in files] == ["batch-00000.xml", "batch-00001.xml"]
    assert (tmp_path / "ids.txt").read_text().split() == ["38000001", "38000002", "38000003"]
    assert all(
        p["tool"] == ["healthnav"] and p["email"] == ["dev@example.org"] and p["api_key"] == ["k123"]
        for _, p in state.requests
    )
    assert [p for p, _ in state.requests].count("/esearch.fcgi") == 3  # two failures, then success
    assert 1.0 in sleeps and 2.0 in sleeps  # exponential backoff after 429 and 503
    efetch = [p for path, p in state.requests if path.endswith("efetch.fcgi")]
    assert efetch[0]["id"] == ["38000001,38000002"] and efetch[1]["id"] == ["38000003"]
    recs = [i.record for i in read_pubmed(files[0]) if i.record]
    assert recs and recs[0].metadata["pmid"] == "38000001"
    # resume: delete one batch, rerun; only that batch is fetched again
    files[1].unlink()
    state.requests.clear()
    with EutilsClient(email="dev@example.org", base_url=url, sleep=sleeps.append) as client:
        client.download("chest pain", tmp_path, max_records=3, batch_size=2)
    assert [path for path, _ in state.requests] == ["/efetch.fcgi"]


def test_gives_up_with_a_clear_error(eutils: tuple[str, _Server]) -> None:
    url, state = eutils
    state.failures = [500] * 10
    with (
        EutilsClient(email="dev@example.org", base_url=url, max_retries=2, sleep=lambda s: None) as client,
        pytest.raises(EutilsError, match=r"gave up after 3 attempts \(HTTP 500\)"),
    ):
        client.esearch("x")
    state.failures = [400]
    with (
        EutilsClient(email="dev@example.org", base_url=url, sleep=lambda s: None) as client,
        pytest.raises(EutilsError, match="HTTP 400"),
    ):
        client.efetch(["1"])


def test_rate_limit_is_3_per_second_without_key_and_10_with() -> None:
    assert EutilsClient(email="a@b.c").rate == 3.0
    assert EutilsClient(email="a@b.c", api_key="k").rate == 10.0
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    limiter = RateLimiter(3.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(7):
        limiter.wait()
    assert now[0] == pytest.approx(2.0)  # 7 requests take 2 s at 3 req/s


def test_email_is_required() -> None:
    with pytest.raises(EutilsError, match="e-mail"):
        EutilsClient(email="")
