"""The live-stream harness: interleaving, per-frame timing, agreement checks, rows and targets."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from deltarnn.bench import fsdd_model
from deltarnn.bench import streaming as S
from deltarnn.cli.main import main as cli_main
from deltarnn.errors import ConfigError


class Recorder(S.Runner):
    """A runner that logs its calls; ``value`` is what it returns."""

    def __init__(self, name, log, value=0.0):
        self.name, self.log, self.value = name, log, value

    def start(self):
        self.log.append((self.name, "start"))

    def step(self, frame):
        self.log.append((self.name, int(frame[0, 0])))
        return torch.full((1, 2), self.value)


def test_time_frames_interleaves_blocks_and_times_every_frame():
    log = []
    runners = {n: Recorder(n, log) for n in "abc"}
    stream = torch.arange(10.0).reshape(10, 1, 1)
    ticks = iter(range(10_000))
    times = S.time_frames(runners, [stream], prefix=2, block=3, repeats=1, now=lambda: next(ticks))
    # Every runner: a fresh start, the 2 untimed prefix frames, then 8 timed frames.
    assert all(len(t) == 8 for t in times.values())
    assert all(t == 1 for ts in times.values() for t in ts)  # one tick per frame: each timed alone
    timed = [entry for entry in log if entry[1] != "start"][6:]  # after the prefixes
    blocks = [timed[i : i + 3] for i in (0, 3, 6)]
    firsts = [b[0][0] for b in blocks]
    assert firsts == ["a", "b", "c"]  # the order rotates from block to block
    assert [f for _, f in timed[:9]] == [2, 3, 4] * 3  # the same frames for every method


def test_check_agreement_refuses_a_method_that_computes_something_else():
    log = []
    frames = torch.zeros(3, 1, 1)
    good = {"stream": Recorder("stream", log), "cells": Recorder("cells", log, 1e-6)}
    assert S.check_agreement(good, frames)["cells"] == pytest.approx(1e-6)
    bad = {"stream": Recorder("stream", log), "cells": Recorder("cells", log, 0.5)}
    with pytest.raises(S.BenchError, match="cells differs from stream"):
        S.check_agreement(bad, frames)
    # the 8-bit streamer may deviate; it is reported, not refused
    int8 = {"stream": Recorder("stream", log), "streamer_int8": Recorder("q", log, 0.5)}
    assert S.check_agreement(int8, frames)["streamer_int8"] == pytest.approx(0.5)


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_controlled_case_reaches_its_occupancy_and_runs_every_method(kind):
    rnn = S.random_rnn(kind, 16)
    case = S.controlled_case(rnn, 0.25, frames=12, prefix=4)
    _, o_x, o_h, bound = S.measure_occupancy(case)
    assert o_x == pytest.approx(round(0.25 * 16) / 16)  # exact on the controlled grid
    assert abs(o_h - 0.25) < 0.1 and bound > 1
    rows = S.run_case(case, S.StreamConfig(block=5, repeats=1, warmup=0))
    methods = {r.method for r in rows}
    assert {"torch_rnn", "torch_cells", "stream", "cells"} <= methods
    for r in rows:
        assert r.frames == 12 and r.us_median > 0 and r.us_p99 >= r.us_median
        assert r.case == "gru-16 25%" if kind == "GRU" else r.case == "lstm-16 25%"
        assert (r.fraction_of_bound is None) == r.dense
        if r.method in ("cells", "cpu_streamer", "onnxruntime", "torch_cells"):
            assert r.extra["max_abs_dev"] < S.AGREEMENT
    fastest = min(r.us_median for r in rows if r.dense)
    assert max(r.vs_fastest_dense for r in rows if r.dense) == pytest.approx(1.0)
    assert all(r.vs_fastest_dense == pytest.approx(fastest / r.us_median) for r in rows)


def test_theta0_case_is_dense():
    case = S.controlled_case(S.random_rnn("GRU", 8), None, frames=6, prefix=2)
    assert case.name == "gru-8 Θ=0" and case.theta_x == case.theta_h == 0.0
    _, o_x, _, _ = S.measure_occupancy(case)
    assert o_x == 1.0


def _row(case, method, us, dense=False, bound=10.0, torch_rnn=None):
    torch_rnn = us if torch_rnn is None else torch_rnn
    return S.StreamRow(
        case=case, method=method, dense=dense, us_median=us, us_p99=us, frames=1,
        vs_fastest_dense=0.0, vs_torch_rnn=torch_rnn / us, bound=bound,
        fraction_of_bound=None if dense else torch_rnn / us / bound, kind="GRU", layers=1,
        input_size=1, hidden_size=1, batch=1, theta_x=0.0, theta_h=0.0, target_occupancy=None,
        occupancy_x=0.0, occupancy_h=0.0,
    )  # fmt: skip


def test_targets_are_judged_on_the_rows():
    rows = [
        _row("fsdd Θ=0.3", "onnxruntime", 30.0, dense=True),
        _row("fsdd Θ=0.3", "streamer", 9.0),
        _row("fsdd Θ=0.3", "streamer_alone", 12.0),
        _row("lstm-128 10%", "torch_cells", 40.0, dense=True),
        _row("lstm-128 10%", "cells", 25.0),
        _row("gru-1024 10%", "streamer", 100.0, torch_rnn=700.0),  # 7x of a 10x bound
    ]
    for r in rows:
        fastest = (
            min(x.us_median for x in rows if x.case == r.case and x.dense)
            if any(x.dense for x in rows if x.case == r.case)
            else r.us_median
        )
        r.vs_fastest_dense = fastest / r.us_median
    targets = {t.name.split(":")[0]: t for t in S.check_targets(rows, "fsdd Θ=0.3")}
    assert targets["FSDD GRU at its Θ"].met is True  # 30 / 9 = 3.3x
    assert targets["FSDD GRU at its Θ, module released (deployed)"].met is False  # 2.5x
    assert "2.50x" in targets["FSDD GRU at its Θ, module released (deployed)"].detail
    assert targets["LSTMCell(128,128) at 10 %"].met is False  # 40 / 25 = 1.6x
    assert "1.60x" in targets["LSTMCell(128,128) at 10 %"].detail
    assert targets["GRU H=1024 at 10 %"].met is True  # 70 % of the bound
    assert targets["Θ=0"].met is None  # no Θ=0 streamer rows
    text = S.format_targets(S.check_targets(rows, "fsdd Θ=0.3"))
    assert "MISSED" in text and "not measured" in text


def test_stream_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="methods"):
        S.StreamConfig(methods=("nope",))
    with pytest.raises(ConfigError, match="occupancies"):
        S.StreamConfig(occupancies=(0.0,))
    with pytest.raises(ConfigError, match="block must be >= 1, got 0"):
        S.StreamConfig(block=0)
    with pytest.raises(ConfigError, match="fsdd_files must be >= 0, got -1"):
        S.StreamConfig(fsdd_files=-1)


def test_cli_stream_prints_the_table_and_the_targets(capsys, tmp_path):
    out = tmp_path / "rows.json"
    argv = [
        "bench", "--stream", "--fsdd-run", "none", "--hidden", "8", "--lstm-hidden",
        "--occupancy", "0.5", "--frames", "6", "--prefix", "2", "--block", "3", "--repeats", "1",
        "--warmup", "0", "--stream-methods", "torch_rnn", "stream", "cells", "--json", str(out),
    ]  # fmt: skip
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "| gru-8 50% |" in printed and "| gru-8 Θ=0 |" in printed
    summary = [line for line in printed.splitlines() if line.startswith("| gru-8 50% | 50 /")]
    assert len(summary) == 1 and summary[0].count("x)") == 2  # stream and cells, vs dense
    assert "not measured" in printed  # the targets, judged (no streamer rows here)
    doc = json.loads(out.read_text())
    assert {r["method"] for r in doc["rows"]} == {"torch_rnn", "stream", "cells"}
    assert doc["config"]["gru_hidden"] == [8] and doc["environment"]["torch"]


def test_onnxruntime_step_equals_torch():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from deltarnn.bench.dense_onnx import OnnxStep

    torch.manual_seed(0)
    for rnn in (nn.GRU(5, 7, 2), nn.LSTM(5, 7)):
        step = OnnxStep(rnn.eval(), batch=2)
        step.start()
        hx = None
        for _ in range(3):
            frame = torch.randn(2, 5)
            want, hx = rnn(frame.unsqueeze(0), hx)
            got = step.step(frame.numpy())
            torch.testing.assert_close(torch.from_numpy(got), want[0], atol=1e-5, rtol=1e-5)


def test_fsdd_selection_takes_the_largest_theta_within_one_point(tmp_path, monkeypatch):
    import deltarnn.train as train

    val = {0.0: 0.95, 0.1: 0.951, 0.2: 0.945, 0.3: 0.939, 0.4: 0.80, 0.5: 0.95}
    trained = []

    class Model:
        def __init__(self, theta):
            self.theta = theta

    def fake_train(cfg, folder, **kw):
        trained.append((cfg.model.theta_x, cfg.method.delta, str(cfg.method.init_from)))

    def fake_load(run):
        name = run.name
        data = type("D", (), {"val": "val", "test": "test"})
        return Model(0.0 if name == "dense" else float(name.split("-")[1])), None, data

    def fake_eval(model, data, dataset):
        return type("E", (), {"value": val[model.theta] if dataset == "val" else 0.5})

    monkeypatch.setattr(train, "train", fake_train)
    monkeypatch.setattr(train, "load_model", fake_load)
    monkeypatch.setattr(train, "evaluate_run", fake_eval)
    config = fsdd_model.FSDDModelConfig(thetas=(0.1, 0.2, 0.3, 0.4))
    selection = fsdd_model.prepare(tmp_path, config)
    # 0.95 - 1 pp = 0.94: 0.1 and 0.2 are within, 0.3 (0.939) and 0.4 are not
    assert selection["theta"] == 0.2 and selection["run"] == "delta-0.2"
    assert trained[0] == (0.0, False, "None")
    assert all(d and init.endswith("dense") for _, d, init in trained[1:])
    assert json.loads((tmp_path / fsdd_model.SELECTION).read_text()) == selection
    assert fsdd_model.prepare(tmp_path, config) == selection  # finished: not trained again
    assert len(trained) == 5


def test_fsdd_load_needs_a_theta_for_a_plain_run_folder(tmp_path):
    with pytest.raises(ConfigError, match="fsdd-theta"):
        fsdd_model.load(tmp_path)
