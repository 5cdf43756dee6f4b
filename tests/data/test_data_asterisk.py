"""Asterisk prompts on a synthetic tree: transcript parsing, text normalisation, alphabet,
deterministic split, features. (Fetching: tests/cli/test_cli_data.py.)"""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import soundfile as sf
import torch

from deltarnn.data import asterisk as ast
from deltarnn.data.errors import DataIntegrityError, DataNotFoundError
from deltarnn.errors import ConfigError

TRANSCRIPT = """\
; Core Asterisk Sounds in English

hello: Hello, world!
beep: [this is a simple beep tone]
digits/5: five
vm-press: Press 1, or * to "don't" exit. (note: spoken slowly)
no-audio: This prompt has no recording.
rate16k: It's 28.8 <click> kilobit.
"""


def _write_tree(base, transcript=TRANSCRIPT):
    voice = base / ast.VOICE_DIR
    (voice / "digits").mkdir(parents=True)
    t = np.arange(4000) / 8000
    for name in ("hello", "beep", "digits/5", "vm-press"):
        sf.write(
            voice / f"{name}.wav", (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 8000
        )
    t16 = np.arange(9600) / 16000
    sf.write(voice / "rate16k.wav", (0.1 * np.sin(2 * np.pi * 440 * t16)).astype(np.float32), 16000)
    doc = base / ast.TRANSCRIPT_FILE
    doc.parent.mkdir(parents=True)
    with gzip.open(doc, "wt") as f:
        f.write(transcript)


pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture
def tree(tmp_path):
    _write_tree(tmp_path / "data" / "asterisk")
    return tmp_path / "data"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello, World!", "hello world"),
        ("[ascending tones]", ""),
        ("<beep ascending>", ""),
        ("(10 seconds of silence)", ""),
        ("at [@]", "at"),
        ('IAX (note: does not say "2")', "iax"),
        ("press * then #", "press star then pound"),
        ("press 0, 7 or 10", "press zero seven or ten"),
        ("dial 500 or 1234", "dial five hundred or one two three four"),
        ("a 28.8 modem", "a twenty eight point eight modem"),
        ("3D audio", "three d audio"),
        ("H.323", "h three hundred twenty three"),
        ("A.M.", "a m"),
        ("Call-Forward on Busy", "call forward on busy"),
        (
            "your party's name; a polite \"don't call\" menu",
            "your party's name a polite don't call menu",
        ),
        ("'quoted' words", "quoted words"),
        ("... using your keypad.", "using your keypad"),
    ],
)
def test_normalize_text(raw, expected):
    assert ast.normalize_text(raw) == expected


def test_number_to_words():
    assert ast.number_to_words("0") == "zero"
    assert ast.number_to_words("19") == "nineteen"
    assert ast.number_to_words("40") == "forty"
    assert ast.number_to_words("101") == "one hundred one"
    assert ast.number_to_words("999") == "nine hundred ninety nine"
    assert ast.number_to_words("007") == "zero zero seven"
    assert ast.number_to_words("8500") == "eight five zero zero"


def test_alphabet_mapping():
    assert ast.NUM_CLASSES == 29 and ast.ALPHABET[ast.BLANK] == ""
    assert ast.text_to_labels(" az'") == [1, 2, 27, 28]
    text = "don't press nine"
    assert ast.labels_to_text(ast.text_to_labels(text)) == text
    assert ast.labels_to_text(torch.tensor([0, 9, 0, 10])) == "hi"
    with pytest.raises(ConfigError, match="'1'"):
        ast.text_to_labels("press 1")
    with pytest.raises(ConfigError):
        ast.labels_to_text([29])


def test_parse_transcripts(tmp_path, tree):
    entries = ast.parse_transcripts(tree / "asterisk" / ast.TRANSCRIPT_FILE)
    assert entries["vm-press"] == 'Press 1, or * to "don\'t" exit. (note: spoken slowly)'
    assert list(entries)[:2] == ["hello", "beep"] and len(entries) == 6
    bad = tmp_path / "bad.txt"
    bad.write_text("; comment\nok: fine\nno separator here\n")
    with pytest.raises(DataIntegrityError, match="bad.txt:3"):
        ast.parse_transcripts(bad)


def test_list_utterances_keeps_prompts_with_audio_and_text(tree):
    utts = ast.list_utterances(tree)
    by_name = {u.name: u for u in utts}
    # beep: empty after removing the annotation; no-audio: no WAV file.
    assert sorted(by_name) == ["digits/5", "hello", "rate16k", "vm-press"]
    assert by_name["vm-press"].text == "press one or star to don't exit"
    assert by_name["rate16k"].text == "it's twenty eight point eight kilobit"
    assert by_name["hello"].duration_s == pytest.approx(0.5)
    assert by_name["rate16k"].duration_s == pytest.approx(0.6)
    assert by_name["hello"].labels == ast.text_to_labels("hello world")


def test_dataset_resamples_to_the_feature_rate(tree, tmp_path):
    utts = {u.name: u for u in ast.list_utterances(tree)}
    ds = ast.AsteriskDataset([utts["rate16k"], utts["hello"]], cache_dir=tmp_path / "c")
    feats, labels = ds[0]
    assert feats.shape == (1 + 4800 // 80, 40)  # 0.6 s at 16 kHz read at 8 kHz
    assert labels.dtype == torch.int64 and ast.labels_to_text(labels) == utts["rate16k"].text
    assert ds[1][0].shape == (1 + 4000 // 80, 40)


def test_split_is_deterministic_and_stable(tmp_path):
    utts = [ast.Utterance(f"p{i}", "x", "x", tmp_path / f"p{i}.wav", 1.0) for i in range(1000)]
    a = ast.split_utterances(utts)
    b = ast.split_utterances(list(reversed(utts)))
    assert {u.name for u in a.test} == {u.name for u in b.test}
    assert 70 <= len(a.test) <= 130 and not a.val
    assert not {u.name for u in a.train} & {u.name for u in a.test}
    # An utterance keeps its side when others are removed.
    sub = ast.split_utterances(utts[::3])
    assert {u.name for u in sub.test} == {u.name for u in a.test if u in utts[::3]}
    three = ast.split_utterances(utts, test_fraction=0.1, val_fraction=0.1)
    assert 70 <= len(three.val) <= 130
    assert {u.name for u in three.test} == {u.name for u in a.test}
    for bad in ((1.0, 0.0), (-0.1, 0.0), (0.6, 0.5)):
        with pytest.raises(ConfigError):
            ast.split_utterances(utts, *bad)


def test_load_asterisk(tree):
    sets = ast.load_asterisk(tree, test_fraction=0.5, max_seconds=0.55)
    names = {u.name for ds in sets.values() for u in ds.utterances}
    assert names == {"digits/5", "hello", "vm-press"}  # rate16k lasts 0.6 s


def test_missing_data_says_how_to_fix(tmp_path):
    with pytest.raises(DataNotFoundError, match="DELTARNN_DATA.*deltarnn data fetch asterisk"):
        ast.list_utterances(tmp_path)
