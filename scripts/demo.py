"""`make demo`: the whole pipeline on the bundled sample against the real local services.

Runs the three jobs the way a user would from the CLI (`dagster job execute`), then prints the
alerts table, the Elasticsearch document counts and how to open the Dagster UI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def dagster_home() -> Path:
    home = Path(os.environ.get("DAGSTER_HOME", REPO / ".dagster_home"))
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run(*args: str) -> None:
    subprocess.run(args, cwd=REPO, check=True)


def run_job(job: str) -> None:
    started = time.perf_counter()
    result = subprocess.run(
        [str(VENV_BIN / "dagster"), "job", "execute", "-m", "pipelines.definitions", "-j", job],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        print(result.stdout[-4000:], result.stderr[-4000:], sep="\n")
        raise SystemExit(f"the {job} job failed; its log is above")
    # Dagster prints one line per event; the INFO lines are the job's own progress.
    for line in result.stderr.splitlines():
        if " - INFO - " in line:
            print("   " + line.split(" - ")[-1])
    print(f"   {job} finished in {time.perf_counter() - started:.1f}s")


def main() -> int:
    home = dagster_home()
    if os.environ.get("KEEPA_API_KEY"):
        print("KEEPA_API_KEY is set: pulling live from Keepa")
    else:
        print("KEEPA_API_KEY is not set: pulling the bundled sample (data/sample/)")
    step("services")
    run(sys.executable, "-m", "devservices", "status")
    step("topics")
    run(str(VENV_BIN / "arbitrage"), "topics")
    for job in ("keepa_pull", "enrichment", "arbitrage"):
        step(f"dagster job execute -j {job}")
        run_job(job)
    step("consumer lag")
    run(str(VENV_BIN / "arbitrage"), "lag")
    step("alerts (best profit first)")
    run(str(VENV_BIN / "arbitrage"), "alerts", "-n", "15")
    step("Elasticsearch")
    from resources.elasticsearch import ElasticsearchResource

    es = ElasticsearchResource()
    for index in ("products", "arbitrage-alerts"):
        print(f"   {index:<18} {es.count(index):>6} documents")
    step("Dagster UI")
    print(f"   DAGSTER_HOME={home} .venv/bin/dagster dev -m pipelines.definitions")
    print("   then open http://127.0.0.1:3000 (asset graph, runs, schedules and sensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
