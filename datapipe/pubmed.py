"""NCBI E-utilities client: esearch for PMIDs, efetch for PubMed XML, politely and resumably.

NCBI's rules (https://www.ncbi.nlm.nih.gov/books/NBK25497/): identify with ``tool`` and
``email``; at most 3 requests per second without an API key and 10 with one; back off when
told to (429) or when the service struggles (5xx). A download is resumable: the PMID list is
saved first (``ids.txt``), then each efetch batch is written atomically as
``batch-00000.xml``; a rerun skips batches already on disk.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from healthnav.contracts.errors import HealthnavError

EUTILS_BASE = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils/"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class EutilsError(HealthnavError, RuntimeError):
    """E-utilities failed after retries, or answered something unusable."""


class RateLimiter:
    """At most ``rate`` calls per second, spaced evenly (NCBI counts requests per second)."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.interval = 1.0 / rate
        self._clock, self._sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            if now < self._next:
                self._sleep(self._next - now)
                now = self._next
            self._next = now + self.interval


class EutilsClient:
    """esearch + efetch over httpx with rate limiting and exponential backoff."""

    def __init__(
        self,
        *,
        email: str,
        tool: str = "healthnav",
        api_key: str | None = None,
        base_url: str = EUTILS_BASE,
        max_retries: int = 5,
        backoff: float = 1.0,
        timeout: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not email or "@" not in email:
            raise EutilsError("NCBI requires a contact e-mail (--email or NCBI_EMAIL)")
        self.params = {"tool": tool, "email": email, **({"api_key": api_key} if api_key else {})}
        self.rate = 10.0 if api_key else 3.0
        self.limiter = RateLimiter(self.rate, sleep=sleep)
        self.max_retries, self.backoff, self._sleep = max_retries, backoff, sleep
        self.http = httpx.Client(
            base_url=base_url, timeout=timeout, headers={"User-Agent": f"{tool} ({email})"}
        )
        self.requests = 0

    def __enter__(self) -> EutilsClient:
        return self

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _request(self, endpoint: str, data: dict[str, Any]) -> httpx.Response:
        payload = {**data, **self.params}
        last = ""
        for attempt in range(self.max_retries + 1):
            self.limiter.wait()
            self.requests += 1
            try:
                resp = self.http.post(endpoint, data=payload)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    return resp
                if resp.status_code not in RETRY_STATUSES:
                    raise EutilsError(f"{endpoint}: HTTP {resp.status_code}: {resp.text[:200]}")
                last = f"HTTP {resp.status_code}"
                retry_after = resp.headers.get("Retry-After")
                if retry_after and retry_after.isdigit() and attempt < self.max_retries:
                    self._sleep(float(retry_after))
                    continue
            if attempt < self.max_retries:
                self._sleep(self.backoff * 2**attempt)
        raise EutilsError(f"{endpoint}: gave up after {self.max_retries + 1} attempts ({last})")

    def esearch(self, term: str, *, retstart: int = 0, retmax: int = 10000) -> tuple[int, list[str]]:
        """(total hit count, PMIDs from ``retstart``) for a PubMed query."""
        resp = self._request(
            "esearch.fcgi",
            {"db": "pubmed", "term": term, "retstart": retstart, "retmax": retmax, "retmode": "json"},
        )
        try:
            result = resp.json()["esearchresult"]
            return int(result["count"]), [str(i) for i in result["idlist"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise EutilsError(f"esearch: unexpected response: {resp.text[:200]}") from exc

    def efetch(self, pmids: list[str]) -> bytes:
        """PubMed XML (a ``PubmedArticleSet``) for the given PMIDs."""
        resp = self._request(
            "efetch.fcgi", {"db": "pubmed", "id": ",".join(pmids), "rettype": "abstract", "retmode": "xml"}
        )
        if b"<PubmedArticleSet" not in resp.content[:2000]:
            raise EutilsError(f"efetch: response is not a PubmedArticleSet: {resp.text[:200]}")
        return resp.content

    def download(
        self, term: str, out_dir: str | Path, *, max_records: int = 1000, batch_size: int = 200
    ) -> list[Path]:
        """Fetch up to ``max_records`` abstracts for ``term`` into ``out_dir``; resumable."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        ids_file = out / "ids.txt"
        if ids_file.is_file():
            pmids = ids_file.read_text().split()
        else:
            pmids = []
            count, page = self.esearch(term, retmax=min(max_records, 10000))
            pmids += page
            while len(pmids) < min(count, max_records) and page:
                _, page = self.esearch(term, retstart=len(pmids), retmax=min(max_records - len(pmids), 10000))
                pmids += page
            pmids = pmids[:max_records]
            _atomic_write(ids_file, ("\n".join(pmids) + "\n").encode())
        files = []
        for n, start in enumerate(range(0, len(pmids), batch_size)):
            path = out / f"batch-{n:05d}.xml"
            if not path.is_file():
                _atomic_write(path, self.efetch(pmids[start : start + batch_size]))
            files.append(path)
        return files


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)
