"""The replica's JSON path (decode -> collate -> predict -> encode) on a module in this process."""

from __future__ import annotations

import torch
from torch import nn

from aiaas_backend.serving.hooks import answer_items


class Summer(nn.Module):
    """Sums each row; decode_request reads {"x": [...]}; refuses a row containing 13."""

    def forward(self, x):
        if (x == 13).any():
            raise ValueError("13 is unlucky")
        return x.sum(-1, keepdim=True)

    def decode_request(self, item):
        return torch.tensor(item["x"], dtype=torch.float32)

    def encode_response(self, row):
        return {"sum": float(row[0])}


CPU = torch.device("cpu")


def test_rows_of_different_shapes_run_as_groups_not_padded():
    out = answer_items(Summer(), [{"x": [1, 2]}, {"x": [1, 2, 3]}, {"x": [5, 5]}], CPU)
    assert out == [{"ok": {"sum": 3.0}}, {"ok": {"sum": 6.0}}, {"ok": {"sum": 10.0}}]


def test_a_failing_item_fails_alone_with_the_hook_and_its_message():
    out = answer_items(Summer(), [{"x": [1, 2]}, {"y": 1}, {"x": [13, 1]}, {"x": [2, 2]}], CPU)
    assert out[0] == {"ok": {"sum": 3.0}} and out[3] == {"ok": {"sum": 4.0}}
    assert out[1] == {"error": "decode_request raised KeyError: 'x'"}
    assert out[2] == {"error": "the model raised ValueError: 13 is unlucky"}


def test_an_answer_json_cannot_hold_is_that_items_error():
    class Bad(Summer):
        def encode_response(self, row):
            return {"sum": row} if float(row[0]) > 5 else float(row[0])

    out = answer_items(Bad(), [{"x": [1, 2]}, {"x": [4, 4]}], CPU)
    assert out[0] == {"ok": 3.0} and out[1]["error"].startswith("encode_response raised TypeError")


def test_the_modules_own_collate_and_plain_numbers_without_hooks():
    class Padded(Summer):
        def collate(self, rows):
            return nn.utils.rnn.pad_sequence(rows, batch_first=True)

    assert answer_items(Padded(), [{"x": [1]}, {"x": [1, 2, 3]}], CPU) == [{"ok": {"sum": 1.0}}, {"ok": {"sum": 6.0}}]
    assert answer_items(nn.Identity(), [[1, 2], [3, 4]], CPU) == [{"ok": [1, 2]}, {"ok": [3, 4]}]
