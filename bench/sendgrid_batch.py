"""CPU per email of the SendGrid adapter: one email per Mail Send call against many per call.

Runs the adapter in this process against the SendGrid stand-in in a child process
(`python -m sandbox.sendgrid`), so this process's CPU time (`resource.getrusage`) is the
adapter's alone: rendering, building the request, JSON, HTTP. The stand-in's CPU is read from
/proc for information. CPU time, not wall time: the figures hold on a busy machine.

    .venv/bin/python bench/sendgrid_batch.py                      # 600 emails, batches 1 and 100
    .venv/bin/python bench/sendgrid_batch.py --emails 1000 --batch 1 --batch 25 --batch 100 --profile

`--baseline PATH` also measures another copy of the adapter module (e.g. the previous one,
`git show <commit>:integrations/adapters/sendgrid.py > /tmp/old_sendgrid.py`). Prints a table
and writes bench/results/sendgrid-batch.json; `--profile` prints the top functions (cProfile)
of each run.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "SG.bench-key"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_stand_in() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(  # noqa: S603 (this interpreter, fixed arguments)
        [sys.executable, "-m", "sandbox.sendgrid", "--port", "0", "--api-key", API_KEY],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # "SendGrid sandbox on http://127.0.0.1:PORT (inbox: ...)"
    return process, line.split(" on ", 1)[1].split()[0]


def requests_for(n: int) -> list[Any]:
    from integrations.adapters.base import DeliveryRequest

    out = []
    for i in range(n):
        order_id = uuid.uuid4()
        delivery_id = uuid.uuid4()
        order = {
            "id": str(order_id),
            "status": "paid",
            "email": f"buyer{i}@example.com",
            "customer_name": f"Buyer {i}",
            "currency": "USD",
            "subtotal_minor": 5300,
            "shipping_minor": 130,
            "total_minor": 5430,
            "lines": [
                {
                    "sku": "MUG-1",
                    "name": "Mug",
                    "quantity": 2,
                    "unit_price_minor": 1450,
                    "line_total_minor": 2900,
                },
                {
                    "sku": "TEE-1",
                    "name": "Tee",
                    "quantity": 1,
                    "unit_price_minor": 2400,
                    "line_total_minor": 2400,
                },
            ],
            "shipping_address": {
                "name": f"Buyer {i}",
                "line1": "12 Analytical Row",
                "line2": "",
                "city": "London",
                "postal_code": "N1 9GU",
                "country": "GB",
            },
            "created_at": "2025-03-04T10:20:30+00:00",
            "updated_at": "2025-03-04T10:25:00+00:00",
            "version": 2,
        }
        out.append(
            DeliveryRequest(
                delivery_id=delivery_id,
                idempotency_key=f"email:{order_id}:order.paid:v2",
                event_type="order.paid",
                order_id=order_id,
                order_version=2,
                payload={
                    "order": order,
                    "event": {
                        "from_status": "pending_payment",
                        "to_status": "paid",
                        "actor": "system:stripe",
                        "at": "2025-03-04T10:25:00+00:00",
                        "data": {"intent_id": "pi_1"},
                    },
                },
            )
        )
    return out


def load_adapter(path: str | None) -> Any:
    if path is None:
        from integrations.adapters.sendgrid import SendGridAdapter

        return SendGridAdapter
    spec = importlib.util.spec_from_file_location("baseline_sendgrid", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SendGridAdapter


def measure(adapter_class: Any, batch: int, emails: int, pid: int, url: str, profile: bool) -> dict[str, Any]:
    from django.conf import settings

    settings.SENDGRID_BATCH_SIZE = batch
    adapter = adapter_class()
    requests = requests_for(emails)
    batches = [requests[i : i + batch] for i in range(0, len(requests), batch)]
    adapter.deliver(requests_for(2)[:1])  # warm: templates compiled, connection code loaded
    stats_before = json.loads(_get(f"{url}/_sandbox/stats"))
    profiler = cProfile.Profile() if profile else None
    child_before, cpu_before, wall_before = child_cpu_seconds(pid), cpu_seconds(), time.perf_counter()
    if profiler:
        profiler.enable()
    ok = 0
    for chunk in batches:
        ok += sum(outcome.ok for outcome in adapter.deliver(chunk))
    if profiler:
        profiler.disable()
    cpu, wall = cpu_seconds() - cpu_before, time.perf_counter() - wall_before
    child = child_cpu_seconds(pid) - child_before
    stats_after = json.loads(_get(f"{url}/_sandbox/stats"))
    result = {
        "batch": batch,
        "emails": emails,
        "delivered": ok,
        "calls": stats_after["calls"] - stats_before["calls"],
        "adapter_cpu_ms_per_email": round(cpu * 1000 / emails, 3),
        "stand_in_cpu_ms_per_email": round(child * 1000 / emails, 3),
        "wall_ms_per_email": round(wall * 1000 / emails, 3),
    }
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
        result["profile"] = out.getvalue()
    return result


def _get(url: str, *, post: bool = False) -> str:
    from urllib.request import Request, urlopen

    with urlopen(Request(url, data=b"" if post else None), timeout=30) as response:  # noqa: S310 (a local stand-in)
        return response.read().decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--emails", type=int, default=600)
    parser.add_argument("--batch", type=int, action="append")
    parser.add_argument("--baseline", help="another copy of integrations/adapters/sendgrid.py to measure too")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "sendgrid-batch.json"))
    args = parser.parse_args()
    batches = args.batch or [1, 100]

    process, url = start_stand_in()
    tmp = tempfile.mkdtemp(prefix="sendgrid-bench-")
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "SQLITE_PATH": f"{tmp}/db.sqlite3",
            "SENDGRID_API_BASE": url,
            "SENDGRID_API_KEY": API_KEY,
            "MONITORING_ENABLED": "false",
        }
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    runs = []
    try:
        candidates = [("current", None)] + ([("baseline", args.baseline)] if args.baseline else [])
        for label, path in candidates:
            adapter_class = load_adapter(path)
            for batch in batches:
                run = measure(adapter_class, batch, args.emails, process.pid, url, args.profile)
                run["adapter"] = label
                runs.append(run)
                _get(f"{url}/_sandbox/reset", post=True)
    finally:
        process.terminate()
        process.wait(timeout=10)

    print(
        f"{'adapter':<9} {'batch':>5} {'emails':>6} {'calls':>6} {'adapter CPU ms/email':>21} "
        f"{'stand-in CPU ms/email':>22} {'wall ms/email':>14}"
    )
    for run in runs:
        print(
            f"{run['adapter']:<9} {run['batch']:>5} {run['emails']:>6} {run['calls']:>6} "
            f"{run['adapter_cpu_ms_per_email']:>21} {run['stand_in_cpu_ms_per_email']:>22} "
            f"{run['wall_ms_per_email']:>14}"
        )
    for run in runs:
        if "profile" in run:
            print(f"\n--- {run['adapter']} adapter, batch {run['batch']}: top functions by own time")
            print(run["profile"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"runs": [{k: v for k, v in r.items() if k != "profile"} for r in runs]}, indent=2)
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
