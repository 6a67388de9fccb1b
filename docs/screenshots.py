"""Make the README's pictures of the published pages: `.venv-test/bin/python docs/screenshots.py`.

The labelled evaluation set (tests/data/eval: 357 items from 16 outlets) goes through the real
pipeline into a temporary database; the app serves it on 127.0.0.1, and headless Chromium
(Debian's `chromium` package) photographs the index, a feed's preview page and a digest e-mail
(as rendered for sending) into docs/img/.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aggregator.config import (  # noqa: E402
    Digest,
    Filter,
    Output,
    Publishing,
    Server,
    load_config,
)
from aggregator.digest.compose import compose  # noqa: E402
from aggregator.digest.periods import Period  # noqa: E402
from aggregator.digest.render import render_digest  # noqa: E402
from aggregator.evaluate import load_labelled  # noqa: E402
from aggregator.feed.normalise import normalise  # noqa: E402
from aggregator.process.pipeline import Processor  # noqa: E402
from aggregator.publish.publisher import Publisher  # noqa: E402
from aggregator.storage import Storage  # noqa: E402
from aggregator.web import WebServer, create_app  # noqa: E402

EVAL = ROOT / "tests" / "data" / "eval"
OUT = ROOT / "docs" / "img"
TITLES = {
    "ap-world": "AP World",
    "reuters-world": "Reuters World",
    "bbc-world": "BBC World",
    "bbc-middle-east": "BBC Middle East",
    "guardian-world": "The Guardian World",
    "guardian-environment": "The Guardian Environment",
    "aljazeera": "Al Jazeera",
    "aljazeera-arabic": "Al Jazeera Arabic",
    "france24-fr": "France 24",
    "trt-world": "TRT World",
    "npr-world": "NPR World",
    "dw": "DW",
    "the-herald": "The Herald",
    "metro-daily": "Metro Daily",
    "valley-star": "Valley Star",
    "carbon-brief": "Carbon Brief",
}


def main() -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("headless Chromium is needed: apt-get install chromium")
    base = load_config(EVAL / "feeds.yaml")
    config = dataclasses.replace(
        base,
        sources=tuple(
            dataclasses.replace(s, title=TITLES.get(s.id, s.title)) for s in base.sources
        ),
        outputs=(
            Output("front-page", "Front page", "Every story once, led by the wires."),
            Output("middle-east", "Middle East", "Palestine, Syria and the region."),
        ),
        server=Server(base_url="http://127.0.0.1:8080/"),
        publishing=Publishing(title="The Aggregator"),
    )
    labelled = sorted(load_labelled(EVAL / "items.jsonl"), key=lambda i: (i.published, i.id))
    now = [labelled[0].published]
    with tempfile.TemporaryDirectory() as folder:
        storage = Storage.open(f"sqlite:///{folder}/shots.db", clock=lambda: now[0])
        storage.sync_sources(config.sources)
        processor = Processor(config)
        for item in labelled:
            now[0] = item.published + timedelta(minutes=5)
            entries = normalise([item.raw], item.raw.link or "", now[0])
            kept = processor.keep(item.source, entries)
            storage.save_entries(item.source, kept.entries, filer=processor)
        server = WebServer(
            create_app(Publisher(storage, config, clock=lambda: now[0])), "127.0.0.1", 0
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        OUT.mkdir(parents=True, exist_ok=True)
        digest = Digest(
            "briefing", "Evening briefing", "0 19 * * *", timezone="Europe/London", filter=Filter()
        )
        end = labelled[-1].published + timedelta(minutes=10)
        view = compose(storage, config, digest, Period(end - timedelta(hours=8), end))
        rendered = render_digest(view, "your address is on the list of recipients of it")
        (Path(folder) / "digest.html").write_text(rendered.html, encoding="utf-8")
        pictures = [
            ("index", f"http://127.0.0.1:{server.port}/", 900, 1100),
            ("feed-preview", f"http://127.0.0.1:{server.port}/feeds/front-page", 900, 1500),
            ("digest", f"file://{folder}/digest.html", 680, 1500),
        ]
        for name, url, width, height in pictures:
            target = OUT / f"{name}.png"
            subprocess.run(
                [
                    chromium,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--hide-scrollbars",
                    f"--user-data-dir={folder}/chromium",
                    f"--window-size={width},{height}",
                    f"--screenshot={target}",
                    url,
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )
            print(f"wrote {target.relative_to(ROOT)}")
        server.stop()
        thread.join()
        storage.close()


if __name__ == "__main__":
    main()
