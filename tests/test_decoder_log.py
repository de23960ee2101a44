"""Decoder noise stays out of stderr and lands in the request's structured log line.

libtiff prints ``TIFFFillStrip: Read error on strip ...`` from C straight to file descriptor 2 for a
truncated TIFF; on Lambda each such line would be an unstructured CloudWatch line chosen by the
sender. These tests use that real decoder on a real hostile file (and plain ``os.write(2, ...)``,
which is what C's stderr does), check the process's own stderr before and after, threads, the
bound, and the handler end to end in a fresh process. They also measure what the capture costs.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
import warnings

import pytest

from export.registry import LITE0_PREPROCESSING
from lambda_onnx import decoder_log
from lambda_onnx.decoder_log import MAX_MESSAGES, DecoderLog, captured, collecting
from lambda_onnx.errors import InvalidImageError
from lambda_onnx.preprocess import _decode, decode, prepare
from tests.helpers import corpus
from tests.helpers.process import ROOT

HOSTILE = corpus.truncated_deflate_tiff()


def test_c_level_stderr_and_python_warnings_go_to_the_request(capfd):
    os.write(2, b"before\n")
    with collecting() as record, captured():
        os.write(2, b"TIFFFillStrip: Read error on strip 4\n")
        warnings.warn("Truncated File Read", UserWarning, stacklevel=1)
    os.write(2, b"after\n")
    assert record.messages == ["TIFFFillStrip: Read error on strip 4", "UserWarning: Truncated File Read"]
    assert record.count == 2 and not record.truncated
    assert capfd.readouterr().err == "before\nafter\n"  # the process's own stderr, untouched around it


def test_a_truncated_tiff_through_prepare(capfd):
    with collecting() as record, pytest.raises(InvalidImageError):
        prepare(HOSTILE, LITE0_PREPROCESSING)
    assert record.count >= 1 and any("TIFFFillStrip" in m for m in record.messages), record
    assert capfd.readouterr().err == ""
    assert record.log_fields()["decoder_message_count"] == record.count


def test_without_a_collector_the_output_is_dropped_to_debug_logging(capfd, caplog):
    with caplog.at_level("DEBUG", logger="lambda_onnx.decoder"), pytest.raises(InvalidImageError):
        decode(HOSTILE)
    assert capfd.readouterr().err == ""
    assert any("TIFFFillStrip" in m for r in caplog.records for m in r.decoder_messages)


def test_a_quiet_decode_adds_nothing_to_the_log_line():
    with collecting() as record:
        prepare(corpus.encode(corpus.chelsea(), "JPEG"), LITE0_PREPROCESSING)
    assert record.count == 0 and record.log_fields() == {}


def test_nested_captures_capture_once(capfd):
    with collecting() as record, captured():
        with captured():
            os.write(2, b"inner\n")
        os.write(2, b"outer\n")
    assert record.messages == ["inner", "outer"]
    assert capfd.readouterr().err == ""


def test_a_flood_is_bounded_and_never_blocks(capfd):
    line = b"TIFFReadDirectory: Warning, unknown field with tag 12345 encountered.\n"
    started = time.perf_counter()
    with collecting() as record, captured():
        for _ in range(50_000):  # 3.5 MB: far more than the pipe holds
            _write_ignoring_full_pipe(line)
    assert time.perf_counter() - started < 10
    assert len(record.messages) == MAX_MESSAGES and record.truncated
    assert 0 < record.count < 50_000  # what fitted in the pipe was counted; the rest was dropped
    assert capfd.readouterr().err == ""


def _write_ignoring_full_pipe(data: bytes) -> None:
    """What C's stdio does with a full non-blocking stderr: the write fails and the line is lost."""
    try:
        os.write(2, data)
    except BlockingIOError:
        pass


def test_threads_take_turns_and_keep_their_own_messages(capfd):
    records: dict[int, DecoderLog] = {}

    def work(n: int) -> None:
        with collecting() as record:
            for _ in range(20):
                with captured():
                    os.write(2, f"thread {n}\n".encode())
                    time.sleep(0.0005)
        records[n] = record

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert set(records) == set(range(6))
    for n, record in records.items():
        assert record.count == 20 and set(record.messages) == {f"thread {n}"}, (n, record)
    os.write(2, b"still mine\n")
    assert capfd.readouterr().err == "still mine\n"


def test_hostile_tiffs_decoded_in_threads_each_report_their_own():
    results: list[DecoderLog] = []
    lock = threading.Lock()

    def work() -> None:
        with collecting() as record:
            with pytest.raises(InvalidImageError):
                decode(HOSTILE)
            decode(corpus.encode(corpus.chelsea(), "PNG"))
        with lock:
            results.append(record)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    counts = {r.count for r in results}
    assert len(results) == 4 and len(counts) == 1 and counts.pop() >= 1, [r.count for r in results]


def test_with_fd_2_closed_the_decode_still_runs():
    code = ("import os, sys; os.close(2); from tests.helpers import corpus; "
            "from lambda_onnx.decoder_log import collecting; from lambda_onnx.preprocess import decode; "
            "d = decode(corpus.encode(corpus.chelsea(), 'PNG')); print('OK', d.width)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "OK 451" in out.stdout, out


def test_the_handler_log_line_carries_the_decoder_messages_and_stderr_stays_clean(lite0):
    """A fresh process, as on Lambda: import the handler, send the hostile TIFF, read both streams."""
    code = """
import base64, json, sys
import lambda_onnx.handler as h

class Context:  # what powertools reads from Lambda's context object
    function_name, function_version, memory_limit_in_mb = "resnet-serverless-test", "$LATEST", 2048
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:resnet-serverless-test"
    aws_request_id = "00000000-0000-0000-0000-000000000000"

data = base64.b64encode(open(sys.argv[1], 'rb').read()).decode()
for _ in range(2):  # twice: Python prints a warning once per code location unless told otherwise
    response = h.handler({"image": data}, Context())
    print("RESPONSE", json.dumps(response))
"""
    hostile = lite0.parent / "hostile.tiff"
    hostile.write_bytes(HOSTILE)
    env = {**os.environ, "MODEL_PATH": str(lite0), "POWERTOOLS_METRICS_NAMESPACE": "Tests"}
    out = subprocess.run([sys.executable, "-c", code, str(hostile)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "TIFF" not in out.stderr and "Read error" not in out.stderr, out.stderr  # no raw decoder lines
    responses = [json.loads(line.split(" ", 1)[1]) for line in out.stdout.splitlines() if line.startswith("RESPONSE ")]
    assert [r["statusCode"] for r in responses] == [400, 400]
    refused = [json.loads(line) for line in out.stdout.splitlines()
               if line.startswith("{") and json.loads(line).get("message") == "request refused"]
    assert len(refused) == 2, out.stdout[-3000:]
    for entry in refused:
        assert entry["decoder_message_count"] >= 1 and entry["decoder_message_count"] == refused[0]["decoder_message_count"]
        assert any(m.startswith("TIFFFillStrip: Read error on strip") for m in entry["decoder_messages"]), entry


def test_the_capture_costs_next_to_nothing_on_a_normal_jpeg(capsys):
    """The overhead of capturing (pipe, two dup2, lock, warnings) on a 451x300 JPEG decode."""
    data = corpus.encode(corpus.chelsea(), "JPEG", quality=90)

    def timed(fn, rounds: int = 300) -> float:
        samples = []
        for _ in range(rounds):
            started = time.perf_counter_ns()
            fn()
            samples.append(time.perf_counter_ns() - started)
        return statistics.median(samples) / 1e3  # microseconds

    bare = lambda: _decode(data, None, False, 50_000_000)  # noqa: E731  (decode without the capture)
    with_capture = lambda: decode(data)  # noqa: E731
    timed(bare, 30), timed(with_capture, 30)  # warm up
    bare_us, captured_us, alone_us = timed(bare), timed(with_capture), timed(_empty_capture, 1000)
    with capsys.disabled():
        print(f"\ndecode of a 451x300 JPEG: {bare_us:.0f} µs bare, {captured_us:.0f} µs captured; "
              f"an empty capture alone: {alone_us:.1f} µs ({100 * alone_us / bare_us:.1f} % of the decode)")
    assert alone_us < 500 and alone_us < 0.25 * bare_us


def _empty_capture() -> None:
    with captured():
        pass


def test_decoder_log_module_holds_no_request_between_requests():
    assert decoder_log._current.get() is None
    with collecting():
        assert decoder_log._current.get() is not None
    assert decoder_log._current.get() is None
