"""The dashboard's state: folding events, bounded downsampling, the text fallback."""

from aiaas_sdk._sse import END, SSEParser
from aiaas_sdk.widgets import RunState, Series
from aiaas_sdk.wire import RunEvent


def _ev(seq, kind, **data):
    return RunEvent(seq=seq, kind=kind, time=1000.0 + seq, data=data)


def test_a_million_points_stay_bounded_and_keep_the_shape():
    series = Series(cap=1000)
    for i in range(1_000_000):
        series.add(float(i), float(i) * 2)
    assert len(series.points) <= 1000
    assert series.last == (999_999.0, 1_999_998.0)
    xs = [x for x, _ in series.points]
    assert xs == sorted(xs) and xs[0] == 0.0 and xs[-1] > 990_000  # evenly spread over the run
    assert series.view()[-1] == series.last


def test_new_points_are_handed_out_once_and_a_compaction_asks_for_a_resend():
    series = Series(cap=4)
    for i in range(3):
        series.add(i, i)
    assert series.take_new() == [(0, 0), (1, 1), (2, 2)]
    assert series.take_new() == []
    series.add(3, 3)
    series.add(4, 4)  # fifth point: over the cap, compacted
    assert series.take_new() is None
    assert series.points == [(0, 0), (2, 2), (4, 4)]


def test_state_folds_status_progress_metrics_and_logs():
    state = RunState("run_1", "digits", log_lines=2)
    for event in [
        _ev(1, "status", status="queued", attempt=1),
        _ev(2, "status", status="running", attempt=1),
        _ev(3, "progress", step=0, total_steps=10, epoch=0, max_epochs=2),
        _ev(4, "metric", name="loss", value=2.0, step=0, epoch=0),
        _ev(5, "log", line="a"), _ev(6, "log", line="b"), _ev(7, "log", line="c"),
        _ev(8, "metric", name="loss", value=1.0, step=9, epoch=1),
        _ev(9, "progress", step=10, total_steps=10, epoch=1, max_epochs=2),
        _ev(10, "status", status="succeeded", attempt=1),
    ]:
        state.apply(event)
    assert state.ended and state.status == "succeeded" and state.last_seq == 10
    assert (state.step, state.total_steps, state.epoch, state.max_epochs) == (10, 10, 1, 2)
    assert state.series["loss"].points == [(0.0, 2.0), (9.0, 1.0)]
    assert list(state.logs) == ["b", "c"]
    assert state.elapsed() == 8.0
    text = state.summary()
    assert "Run run_1 · digits · succeeded · 8.0s" in text and "step 10/10 · epoch 1/2" in text
    assert "loss=1" in text


def test_sse_parser_reads_events_comments_and_the_end():
    parser = SSEParser()
    lines = [": keep-alive", "", "id: 7", "event: metric",
             'data: {"seq":7,"kind":"metric","time":1.5,"data":{"name":"x","value":1}}', "",
             "event: end", "data: {}", ""]
    out = [parser.feed(line) for line in lines]
    events = [o for o in out if o is not None]
    assert events[0].seq == 7 and events[0].data == {"name": "x", "value": 1}
    assert events[1] == END


def test_the_dashboard_and_the_runs_table_name_a_runs_datasets():
    from datetime import UTC, datetime

    from aiaas_sdk._run import RunList, _RunBase
    from aiaas_sdk.widgets._dashboard import RunDashboard
    from aiaas_sdk.wire import RunPublic

    state = RunState("run_1", "pets", datasets=["pets:2", "labels:1"])
    assert "datasets: pets:2, labels:1" in state.summary()
    assert "data: <code>pets:2</code>, <code>labels:1</code>" in RunDashboard._header_html(state)
    assert "data:" not in RunDashboard._header_html(RunState("run_2", "none"))
    data = RunPublic.model_validate({"id": "run_1", "name": "pets", "status": "succeeded", "datasets": ["pets:2"],
                                     "created_at": datetime(2026, 1, 1, tzinfo=UTC)})
    table = RunList([_RunBase(data)])
    assert "<th>datasets</th>" in table._repr_html_() and "<td>pets:2</td>" in table._repr_html_()
