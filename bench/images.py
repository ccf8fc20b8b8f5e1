"""The platform's images built locally (``make images``): sizes, cold builds, warm rebuilds.

1. cold: the images and the builder's whole layer cache are deleted, then each image is built in
   build order (Python base, pause, operator, trainer, CPU server), timed one by one. The trainer
   and the CPU server share their torch layer, so the server's cold figure is "after the trainer";
   ``--unshared`` also measures it alone (its cache deleted again, base kept).
2. warm: ``ensure_images()`` with nothing changed (what every real-node start pays).
3. code change: one line appended to a module of the build context, then each Python image
   rebuilt: only its code layers should be built again. Repeated ``--runs`` times with a
   different line each time.

Every build reads a snapshot of the build context taken at the start (the checkout is shared
with other engineers' edits, which would otherwise rebuild code layers mid-measurement); the real
checkout is never edited, and the images are rebuilt from it at the end (from the cache, mostly)
so that the refs name the checkout's code again. The cold part holds the images lock throughout,
so no other process's build interleaves with it.
4. export: each image's docker-archive for the node, cold (written) and warm (cached).

Cold figures depend on the network to PyPI and Debian (and pip's own downloads: builds use
``--no-cache-dir``). Writes bench/results/images.json.

    python -m bench.images [--skip-cold] [--unshared] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from healthnav.devenv import images

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NAMES = list(images.DEFAULT_NAMES)
PYTHON_IMAGES = [images.OPERATOR, images.TRAINER, images.SERVER_CPU]
# The module a one-line change lands in: every Python image installs it.
CHANGED_MODULE = Path("healthnav") / "__init__.py"


def timed_build(name: str, context: Path = REPO) -> tuple[float, images.LocalImage]:
    started = time.perf_counter()
    [image] = images.ensure_images([name], context=context)
    return time.perf_counter() - started, image


def copy_context(dest: Path) -> Path:
    """The build context's files (what .dockerignore lets in, and .dockerignore itself) in ``dest``.

    Same content, so every layer comes from the cache until the copy is edited."""
    allowed = [
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for rel in allowed:
        src = REPO / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    shutil.copy2(REPO / ".dockerignore", dest / ".dockerignore")
    return dest


def shared_layers(engine: images.Engine, a: str, b: str) -> dict[str, float]:
    """Layers two images have in common (the lowest ones), and their bytes."""
    info_a = images.inspect_image(engine, a) or {}
    layers_a = images.image_layers(engine, a)
    layers_b = set(images.image_layers(engine, b))
    sizes: dict[str, int] = {}
    if engine.kind == "buildah" and info_a:
        sizes = {layer["digest"]: int(layer["size"]) for layer in json.loads(info_a["Manifest"])["layers"]}
    common = [d for d in layers_a if d in layers_b]
    return {"layers": len(common), "bytes": sum(sizes.get(d, 0) for d in common)}


def cold(context: Path, unshared: bool) -> dict[str, object]:
    with images.images_lock():
        images.remove_images(NAMES)
        seconds: dict[str, float] = {}
        for name in NAMES:
            seconds[name], _ = timed_build(name, context)
        result: dict[str, object] = {"seconds": seconds, "total_s": sum(seconds.values())}
        if unshared:
            images.remove_images([n for n in NAMES if n != images.PYTHON])
            result["server_cpu_alone_s"], _ = timed_build(images.SERVER_CPU, context)
            for name in NAMES:  # back to the shared state for what follows
                timed_build(name, context)
    return result


def warm(context: Path, runs: int) -> dict[str, object]:
    runs_s = []
    for _ in range(runs):
        started = time.perf_counter()
        images.ensure_images(context=context)
        runs_s.append(time.perf_counter() - started)
    return {"median_s": statistics.median(runs_s), "runs_s": runs_s}


def code_change(context: Path, runs: int) -> dict[str, object]:
    per_image: dict[str, list[float]] = {name: [] for name in PYTHON_IMAGES}
    module = context / CHANGED_MODULE
    for run in range(runs):
        with module.open("a") as f:
            f.write(f"# bench.images: one-line change {run} at {time.time()}\n")
        for name in PYTHON_IMAGES:
            seconds, _ = timed_build(name, context)
            per_image[name].append(seconds)
    return {
        "changed": f"one line appended to {CHANGED_MODULE}",
        "median_s": {n: statistics.median(v) for n, v in per_image.items()},
        "runs_s": per_image,
    }


def export(built: list[images.LocalImage]) -> dict[str, object]:
    """Each archive written (cold) and asked for again (warm); archives this run wrote are deleted
    afterwards (several GB each), those that were there before are left as they were."""
    out: dict[str, object] = {}
    root = images.cache_dir() / "images" / "archives"
    for image in built:
        existed = images.archive_path(root, image).exists()
        images.archive_path(root, image).unlink(missing_ok=True)
        started = time.perf_counter()
        path = images.export_archive(image)
        cold_s = time.perf_counter() - started
        started = time.perf_counter()
        images.export_archive(image)
        out[image.name] = {
            "cold_s": cold_s,
            "warm_s": time.perf_counter() - started,
            "archive_bytes": path.stat().st_size,
        }
        if not existed:
            path.unlink()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.images")
    parser.add_argument("--skip-cold", action="store_true", help="keep the cache: warm figures only")
    parser.add_argument("--unshared", action="store_true", help="also the CPU server's cold build alone")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    result: dict[str, object] = {"machine": "shared 2-core VM; figures are noisy, medians quoted"}
    with tempfile.TemporaryDirectory(prefix="bench-images-") as tmp:
        context = copy_context(Path(tmp))
        if not args.skip_cold:
            result["cold_build"] = cold(context, args.unshared)
        built = images.ensure_images(context=context)
        engine = images.detect_engine()
        result["engine"] = engine.kind
        result["size_bytes"] = {i.name: i.size_bytes for i in built}
        result["trainer_and_server_cpu_share"] = shared_layers(
            engine, images.IMAGES[images.TRAINER].ref, images.IMAGES[images.SERVER_CPU].ref
        )
        result["warm_ensure_images"] = warm(context, args.runs)
        result["code_change_rebuild"] = code_change(context, args.runs)
    started = time.perf_counter()
    restored = images.ensure_images()  # the refs name the checkout's code again
    result["restore_from_checkout_s"] = time.perf_counter() - started
    result["export_archive"] = export(restored)
    out = HERE / "results" / "images.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
