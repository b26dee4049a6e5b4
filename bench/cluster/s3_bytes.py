"""What one shard costs on the way through the object store: encode, PUT, GET, decode, and the S3 server's share.

    .venv/bin/python bench/cluster/s3_bytes.py [--rows 50000] [--repeat 12]

A shard of bench/orchestration's input (Alpaca outputs with a per-copy suffix, plus a length column: what a
row stage caches) against tests/s3server.py's moto server in its own process (speed.py's S3Process). CPU is
this process's (the client: s3fs/botocore threads included) and the server's, per operation, in ms. Sections:
- codec: the shard cache's Parquet codec (lz4 today) against zstd level 1 and none: bytes and CPU each way;
- checksums: botocore's CRC32 of every body (when_supported, its default) against when_required (tried in e8df5b0, reverted in 47e2ea3: botocore's default stands);
- narrow: one column of the shard through `storage.scan_parquet`: footer + that column's ranges with Polars'
  client (what it does when that skips more than RANGES_PAY bytes) against footer + the whole object through
  s3fs (what it did before; what it does for small objects), and fsspec's parquet ranges through s3fs.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench" / "orchestration"), str(ROOT / "bench" / "cluster")]
from run import make_input  # noqa: E402
from speed import S3Process  # noqa: E402


def cpu_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * 1000


def measure(s3: S3Process, repeat: int, fn) -> dict[str, float]:
    """ms per call: wall, client CPU, server CPU (after one call to warm up)."""
    fn(-1)
    wall, client, server = time.perf_counter(), cpu_ms(), s3.cpu()
    for i in range(repeat):
        fn(i)
    return {"wall": (time.perf_counter() - wall) * 1000 / repeat, "client": (cpu_ms() - client) / repeat,
            "server": (s3.cpu() - server) * 1000 / repeat}


def show(label: str, row: dict[str, float]) -> None:
    print(f"{label:<44}" + "  ".join(f"{k} {v:7.1f}" for k, v in row.items()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=12)
    args = parser.parse_args()
    import polars as pl

    frame = pl.read_parquet(make_input(Path(tempfile.mkdtemp()), args.rows))
    frame = frame.with_columns(pl.col("text").str.len_chars().alias("chars"))
    print(f"load {os.getloadavg()[0]:.1f}; shard of {len(frame):,} rows")
    with S3Process() as s3:
        os.environ.update(s3.env)
        from pipelines import storage

        storage.write_bytes("s3://sluice/warm", b"x")  # the client is built once per process
        print("-- codec (ms per shard; MB on the wire)")
        for codec in ({"compression": "lz4"}, {"compression": "zstd", "compression_level": 1},
                      {"compression": "uncompressed"}):
            options = codec | {"statistics": False}
            buffer = io.BytesIO()
            frame.write_parquet(buffer, **options)
            data, name = buffer.getvalue(), "-".join(str(v) for v in codec.values())
            rows = {"encode": measure(s3, args.repeat, lambda i: frame.write_parquet(io.BytesIO(), **options)),
                    "put": measure(s3, args.repeat, lambda i: storage.write_bytes(f"s3://sluice/{name}/{i}", data)),
                    "get": measure(s3, args.repeat, lambda i: storage.read_bytes(f"s3://sluice/{name}/{i}")),
                    "decode": measure(s3, args.repeat, lambda i: pl.read_parquet(io.BytesIO(data)))}
            total = sum(r["client"] + r["server"] for r in rows.values())
            print(f"{name:<12} {len(data) / 1e6:6.2f} MB  " + "  ".join(
                f"{k} {r['client']:5.1f}+{r['server']:5.1f}" for k, r in rows.items()) + f"  (client+server) total {total:6.1f}")
        print("-- checksums (a 9 MB object of random bytes)")
        data = os.urandom(9_000_000)
        for setting in ("when_supported", "when_required"):
            os.environ["AWS_REQUEST_CHECKSUM_CALCULATION"] = os.environ["AWS_RESPONSE_CHECKSUM_VALIDATION"] = setting
            show(f"PUT {setting}", measure(s3, args.repeat, lambda i: storage.write_bytes(f"s3://sluice/c-{setting}/{i}", data)))
            show(f"GET {setting}", measure(s3, args.repeat, lambda i: storage.read_bytes(f"s3://sluice/c-{setting}/{i}")))
        del os.environ["AWS_REQUEST_CHECKSUM_CALCULATION"], os.environ["AWS_RESPONSE_CHECKSUM_VALIDATION"]
        print("-- narrow: the `chars` column of the lz4 shard through storage.scan_parquet")
        url = "s3://sluice/lz4/0"
        query = lambda i: storage.scan_parquet(url).select("chars").collect()  # noqa: E731
        show("footer + that column's ranges (Polars)", measure(s3, args.repeat, query))
        pays, storage.RANGES_PAY = storage.RANGES_PAY, 1 << 40
        show("footer + the whole object (s3fs)", measure(s3, args.repeat, query))
        storage.RANGES_PAY = pays

        def ranges(i: int) -> pl.DataFrame:
            import fsspec.parquet

            fs, path = storage.filesystem(url)
            with fsspec.parquet.open_parquet_file(path, fs=fs, columns=["chars"], engine="pyarrow") as fh:
                return pl.read_parquet(fh, columns=["chars"])

        show("fsspec.parquet ranges through s3fs", measure(s3, args.repeat, ranges))


if __name__ == "__main__":
    main()
