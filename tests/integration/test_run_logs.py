"""A run's log shows the user's output and Lightning's messages that matter, not noise."""

from __future__ import annotations

import sysconfig

from .models import WarningRegressor


def test_the_log_tail_is_the_users_output_without_noise(client):
    run = client.train(WarningRegressor(), max_epochs=2, name="tidy-log").wait(timeout=120)
    lines = run.logs().splitlines()
    text = "\n".join(lines)
    # The user's warning, once, with their own file and line to fix it at.
    mine = [line for line in lines if "learning rate looks high" in line]
    assert len(mine) == 1 and mine[0].startswith("UserWarning: ") and 'models.py", line' in mine[0], mine
    # No path into the backend's installation, whatever the libraries warned about.
    for folder in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["stdlib"]}:
        assert folder not in text, text
    assert "site-packages" not in text, text
    # Advertising tips are dropped; the summary is one whole line, not a table cut mid-box.
    assert "Tip:" not in text and not any(ch in text for ch in "┏┃│└"), text
    # Checkpoints are saved and loaded with weights_only chosen, not defaulted with a notice.
    assert "weights_only" not in text, text
    assert any(line.startswith("WarningRegressor: 9 parameters (9 trainable") for line in lines), text
    # Lightning's messages that matter stay.
    assert "`Trainer.fit` stopped: `max_epochs=2` reached." in text
