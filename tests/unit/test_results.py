"""Output files and manifests: parsing, quarantine of bad lines, join by recordId, reconciliation."""

from __future__ import annotations

import json
import random
import re

import pytest

from bedrock_batch.errors import OutputParseError
from bedrock_batch.models import (
    AmazonNova,
    AmazonTitanText,
    AnthropicClaude,
    Converse,
    MetaLlama,
    MistralText,
    ModelOutput,
)
from bedrock_batch.prompts import PromptTemplate
from bedrock_batch.records import BatchRecord, RecordBuilder, SourceRow
from bedrock_batch.results import (
    Manifest,
    Quarantined,
    Reconciliation,
    ResultLine,
    iter_output,
    iter_output_chunks,
    parse_manifest,
    reconcile,
)

FILE = "s3://out/pipeline/run/job/abc123def456/part-00001.jsonl.out"
CLAUDE_OUTPUT = {
    "id": "msg_bdrk_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-haiku-20241022",
    "content": [{"type": "text", "text": "Summary."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 11, "output_tokens": 2},
}


def line(obj) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def test_success_line_becomes_result_with_parsed_output():
    [result] = iter_output(
        [line({"recordId": "Rabc", "modelInput": {}, "modelOutput": CLAUDE_OUTPUT})],
        file=FILE,
        family=AnthropicClaude(),
    )
    assert result == ResultLine("Rabc", ModelOutput("Summary.", 11, 2, "end_turn"), None, None)
    assert result.ok


@pytest.mark.parametrize("code", [400, "400", "ValidationException"])
def test_error_line_with_int_or_string_code_becomes_error_result(code):
    error_line = {
        "recordId": "Rabc",
        "modelInput": {},
        "error": {"errorCode": code, "errorMessage": "Bad input"},
    }
    [result] = iter_output([line(error_line)], file=FILE, family=AnthropicClaude())
    assert result == ResultLine("Rabc", None, str(code), "Bad input")
    assert not result.ok


def test_error_line_without_code_gets_unknown_code():
    [result] = iter_output(
        [line({"recordId": "Rabc", "error": {"errorMessage": "x"}})], file=FILE, family=MetaLlama()
    )
    assert (result.error_code, result.error_message) == ("unknown", "x")


def test_long_error_message_is_shortened():
    [result] = iter_output(
        [line({"recordId": "R1", "error": {"errorCode": 500, "errorMessage": "e" * 10_000}})],
        file=FILE,
        family=MetaLlama(),
    )
    assert len(result.error_message) == 2000


def test_blank_lines_are_skipped_and_line_numbers_match_the_file():
    lines = [b"\n", line({"recordId": "R1", "modelOutput": {"generation": "x"}}), b"   \n", b"{garbled"]
    results = list(iter_output(lines, file=FILE, family=MetaLlama()))
    assert [type(r) for r in results] == [ResultLine, Quarantined]
    assert results[1] == Quarantined(FILE, 4, "line is not valid JSON")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"recordId": "R1", "modelOutput": {"generation": "cut of', "not valid JSON"),
        (b"\xff\xfe not utf-8", "not valid JSON"),
        (b'["a", "list"]', "not a JSON object"),
        (b'{"modelOutput": {"generation": "x"}}', "no recordId"),
        (b'{"recordId": 7, "modelOutput": {"generation": "x"}}', "no recordId"),
        (b'{"recordId": "R1", "modelInput": {}}', "R1: line has neither modelOutput nor error"),
        (b'{"recordId": "R1", "modelOutput": "text"}', "R1: modelOutput is not an object"),
        (b'{"recordId": "R1", "modelOutput": {"outputs": []}}', r"R1: modelOutput\.generation is missing"),
    ],
)
def test_unreadable_line_is_quarantined_not_raised(raw, reason):
    [result] = iter_output([raw], file=FILE, family=MetaLlama())
    assert isinstance(result, Quarantined)
    assert result.file == FILE
    assert result.line_no == 1
    assert re.search(reason, result.reason)


def test_quarantine_reason_does_not_quote_the_line():
    secret = "card 4111 1111 1111 1111"
    raw = json.dumps({"recordId": "R1", "modelOutput": {"completion": secret}}).encode()
    [result] = iter_output([raw], file=FILE, family=AnthropicClaude())
    assert isinstance(result, Quarantined)
    assert "4111" not in result.reason


@pytest.mark.parametrize(
    "raw",
    [
        '{"recordId": "R1", "modelOutput": {"generation": "\ud800"}}',  # a real lone surrogate
        b'{"recordId": "R1", "modelOutput": {"generation": "\\ud800"}}',  # an escaped one
    ],
)
def test_line_with_lone_surrogate_is_quarantined(raw):
    [result] = iter_output([raw], file=FILE, family=MetaLlama())
    assert isinstance(result, Quarantined)


def test_str_lines_are_accepted():
    [result] = iter_output(
        [json.dumps({"recordId": "R1", "modelOutput": {"generation": "x"}})], file=FILE, family=MetaLlama()
    )
    assert result.output.text == "x"


def test_bad_lines_do_not_stop_the_rest_of_the_file():
    lines = [b"garbage", line({"recordId": "R1", "modelOutput": {"generation": "a"}}), b"{", b"}{"]
    lines.append(line({"recordId": "R2", "error": {"errorCode": 429, "errorMessage": "throttled"}}))
    results = list(iter_output(lines, file=FILE, family=MetaLlama()))
    assert [r.record_id for r in results if isinstance(r, ResultLine)] == ["R1", "R2"]
    assert [r.line_no for r in results if isinstance(r, Quarantined)] == [1, 3, 4]


# --- round trip per family ------------------------------------------------------------------------

FAMILY_OUTPUTS = [
    (AnthropicClaude(), lambda i: {**CLAUDE_OUTPUT, "content": [{"type": "text", "text": f"summary {i}"}]}),
    (
        AmazonNova(),
        lambda i: {
            "output": {"message": {"role": "assistant", "content": [{"text": f"summary {i}"}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 11, "outputTokens": 2, "totalTokens": 13},
        },
    ),
    (
        Converse(),
        lambda i: {
            "output": {"message": {"role": "assistant", "content": [{"text": f"summary {i}"}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 11, "outputTokens": 2, "totalTokens": 13},
            "metrics": {"latencyMs": 250},
        },
    ),
    (
        MetaLlama(),
        lambda i: {
            "generation": f"summary {i}",
            "prompt_token_count": 11,
            "generation_token_count": 2,
            "stop_reason": "stop",
        },
    ),
    (MistralText(), lambda i: {"outputs": [{"text": f"summary {i}", "stop_reason": "stop"}]}),
    (
        AmazonTitanText(),
        lambda i: {
            "inputTextTokenCount": 11,
            "results": [{"tokenCount": 2, "outputText": f"summary {i}", "completionReason": "FINISH"}],
        },
    ),
]


@pytest.mark.parametrize(("family", "make_output"), FAMILY_OUTPUTS, ids=lambda v: getattr(v, "name", ""))
def test_round_trip_build_output_parse_joins_shuffled_lines_by_record_id(family, make_output):
    prompt = PromptTemplate(name="p", version="1", system="Summarize.", user="{{ transcript }}")
    builder = RecordBuilder(family, prompt, {"max_tokens": 200})
    built = [builder.build(SourceRow(f"K{i}", f"transcript {i}", {})) for i in range(20)]
    assert all(isinstance(r, BatchRecord) for r in built)
    by_id = {r.record_id: r for r in built}

    # Bedrock echoes modelInput and may write lines in any order; a few records fail.
    out_lines = []
    for i, record in enumerate(built):
        obj = {"recordId": record.record_id, "modelInput": record.model_input}
        if i % 7 == 3:
            obj["error"] = {"errorCode": 400, "errorMessage": "Malformed input request"}
        else:
            obj["modelOutput"] = make_output(i)
        out_lines.append(line(obj))
    random.Random(7).shuffle(out_lines)

    results = list(iter_output(out_lines, file=FILE, family=family))
    assert all(isinstance(r, ResultLine) for r in results)
    joined = {by_id[r.record_id].source_key: r for r in results}
    assert set(joined) == {f"K{i}" for i in range(20)}
    for i in range(20):
        result = joined[f"K{i}"]
        if i % 7 == 3:
            assert (result.output, result.error_code) == (None, "400")
        else:
            assert result.output.text == f"summary {i}"
    recon = reconcile(set(by_id), {r.record_id for r in results}, None)
    assert recon.ok


# --- manifest -------------------------------------------------------------------------------------

MANIFEST = {
    "totalRecordCount": 100,
    "processedRecordCount": 98,
    "successRecordCount": 95,
    "errorRecordCount": 3,
    "inputTokenCount": 12345,
    "outputTokenCount": 2345,
}


def test_parse_manifest_reads_six_counts():
    assert parse_manifest(json.dumps(MANIFEST).encode()) == Manifest(100, 98, 95, 3, 12345, 2345)


def test_parse_manifest_missing_token_counts_are_none():
    data = {k: v for k, v in MANIFEST.items() if "Token" not in k}
    manifest = parse_manifest(json.dumps(data).encode())
    assert (manifest.input_token_count, manifest.output_token_count) == (None, None)


def test_parse_manifest_accepts_numeric_strings():
    manifest = parse_manifest(json.dumps({k: str(v) for k, v in MANIFEST.items()}).encode())
    assert manifest.total_record_count == 100


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (json.dumps({**MANIFEST, "successRecordCount": None}).encode(), "successRecordCount is not a count"),
        (
            json.dumps({k: v for k, v in MANIFEST.items() if k != "errorRecordCount"}).encode(),
            "errorRecordCount",
        ),
        (json.dumps({**MANIFEST, "inputTokenCount": -1}).encode(), "inputTokenCount"),
    ],
)
def test_parse_manifest_rejects_wrong_shapes_naming_file_and_field(data, message):
    with pytest.raises(OutputParseError, match=message) as info:
        parse_manifest(data, file="job/manifest.json.out")
    assert "job/manifest.json.out" in str(info.value)


# --- reconciliation -------------------------------------------------------------------------------


def test_reconcile_lists_missing_record_ids_sorted():
    manifest = Manifest(4, 2, 2, 0, None, None)
    recon = reconcile({"R4", "R1", "R3", "R2"}, {"R1", "R3"}, manifest)
    assert recon == Reconciliation(missing=["R2", "R4"], unexpected=[], manifest_mismatch=None)
    assert not recon.ok


def test_reconcile_reports_unexpected_ids():
    recon = reconcile({"R1"}, {"R1", "R9"}, None)
    assert recon.unexpected == ["R9"]


def test_reconcile_reports_manifest_disagreement():
    recon = reconcile({"R1", "R2"}, {"R1", "R2"}, Manifest(3, 2, 1, 0, None, None))
    assert "totalRecordCount 3 != 2 submitted" in recon.manifest_mismatch
    assert "successRecordCount 1 + errorRecordCount 0 != processedRecordCount 2" in recon.manifest_mismatch


def test_reconcile_agrees_with_consistent_manifest():
    assert reconcile({"R1", "R2"}, {"R1", "R2"}, Manifest(2, 2, 1, 1, 10, 5)).ok


# --- reading only the outcome of a line -----------------------------------------------------------

TRICKY_INPUT = {
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": 'say "modelOutput": {} and "error": 1'}]}
    ],
    "nested": {"modelOutput": {"content": []}, "error": {"errorCode": 500}},
}
ERROR = {"errorCode": 429, "errorMessage": "Too many requests"}
SHAPES = {
    "bedrock order": {"recordId": "Rabc", "modelInput": TRICKY_INPUT, "modelOutput": CLAUDE_OUTPUT},
    "error line": {"recordId": "Rabc", "modelInput": TRICKY_INPUT, "error": ERROR},
    "output before input": {"recordId": "Rabc", "modelOutput": CLAUDE_OUTPUT, "modelInput": TRICKY_INPUT},
    "error then output": {"recordId": "Rabc", "modelInput": {}, "error": ERROR, "modelOutput": CLAUDE_OUTPUT},
    "null output then error": {"recordId": "Rabc", "modelInput": {}, "error": ERROR, "modelOutput": None},
    "output then error": {"recordId": "Rabc", "modelInput": {}, "modelOutput": CLAUDE_OUTPUT, "error": ERROR},
    "record id last": {"modelInput": {}, "modelOutput": CLAUDE_OUTPUT, "recordId": "Rabc"},
    "neither": {"recordId": "Rabc", "modelInput": TRICKY_INPUT},
    "output not an object": {"recordId": "Rabc", "modelInput": {}, "modelOutput": "oops"},
}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")], ids=["compact", "spaced"])
def test_reading_the_outcome_only_gives_what_parsing_the_whole_line_gives(shape, separators):
    raw = json.dumps(shape, separators=separators).encode()
    [fast] = iter_output([raw], file=FILE, family=AnthropicClaude())
    [whole] = iter_output([raw.decode()], file=FILE, family=AnthropicClaude())  # str lines parse whole
    assert fast == whole


def test_duplicate_record_id_key_is_read_as_the_full_parse_reads_it():
    raw = b'{"recordId":"Rfirst","modelInput":{},"modelOutput":' + json.dumps(CLAUDE_OUTPUT).encode()
    raw += b',"recordId":"Rlast"}'
    [result] = iter_output([raw], file=FILE, family=AnthropicClaude())
    assert result.record_id == "Rlast"


def test_bedrock_shaped_line_is_read_without_its_model_input():
    from bedrock_batch.results import _outcome_only

    raw = json.dumps(SHAPES["bedrock order"], separators=(",", ":")).encode()
    assert _outcome_only(raw) == {"recordId": "Rabc", "modelOutput": CLAUDE_OUTPUT}


CLAUDE_SHAPES = {
    "usual": CLAUDE_OUTPUT,
    "two text blocks": {
        **CLAUDE_OUTPUT,
        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
    },
    "tool block first": {**CLAUDE_OUTPUT, "content": [{"type": "tool_use"}, {"type": "text", "text": "b"}]},
    "block without type": {**CLAUDE_OUTPUT, "content": [{"text": "t"}]},
    "no usage": {k: v for k, v in CLAUDE_OUTPUT.items() if k != "usage"},
    "boolean token count": {**CLAUDE_OUTPUT, "usage": {"input_tokens": True, "output_tokens": 2}},
    "no stop reason": {k: v for k, v in CLAUDE_OUTPUT.items() if k != "stop_reason"},
    "null text": {**CLAUDE_OUTPUT, "content": [{"type": "text", "text": None}]},
}


@pytest.mark.parametrize("output", CLAUDE_SHAPES.values(), ids=CLAUDE_SHAPES.keys())
def test_claude_outputs_read_the_same_through_the_quick_and_the_general_path(output):
    from types import MappingProxyType

    general = AnthropicClaude().parse_output(MappingProxyType(output))  # not a dict: the general path
    assert AnthropicClaude().parse_output(output) == general


# --- reading a file a chunk at a time ---------------------------------------------------------------

ODD_FILE = b"".join(
    [
        line({"recordId": "R1", "modelInput": {"messages": []}, "modelOutput": CLAUDE_OUTPUT}),
        b"\n",
        line({"recordId": "R2", "modelInput": {}, "error": {"errorCode": 429, "errorMessage": "slow down"}}),
        b'{"recordId":"R3","modelInput":{"q":"\\"modelOutput\\": in a string"},"modelOutput":'
        + json.dumps(CLAUDE_OUTPUT).encode()
        + b"}\r\n",
        b"   \n",
        b'{"recordId": "R4", "modelOutput": {"generation": "cut of\n',
        line({"recordId": "R5", "modelOutput": {**CLAUDE_OUTPUT, "content": [{"modelOutput": 1}]}}),
        line({"recordId": "R6", "modelOutput": None, "error": {"errorCode": 500, "errorMessage": "boom"}}),
        line({"modelOutput": CLAUDE_OUTPUT}),
        line({"recordId": "R7", "modelOutput": "text"}),
        b'{"recordId":"R8","modelOutput":{"content":[{"type":"text","text":"\\ud800"}]}}\n',
        line({"recordId": "R9", "modelOutput": CLAUDE_OUTPUT, "recordId2": "x"}),
        line({"recordId": "R10", "modelInput": {}, "modelOutput": {"content": []}}),
        b'{"recordId":"R11","modelInput":{},"modelOutput":' + json.dumps(CLAUDE_OUTPUT).encode() + b"}",
    ]
)


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[at : at + size] for at in range(0, len(data), size)]


@pytest.mark.parametrize("chunk_size", [1, 7, 100, 1000, len(ODD_FILE)])
def test_reading_in_chunks_gives_what_reading_line_by_line_gives(chunk_size):
    by_line = list(iter_output(ODD_FILE.split(b"\n"), file=FILE, family=AnthropicClaude()))

    by_chunk = [
        item
        for items in iter_output_chunks(chunked(ODD_FILE, chunk_size), file=FILE, family=AnthropicClaude())
        for item in items
    ]

    assert by_chunk == by_line
    # R5 and R10 hold no text: quarantined as responses with nothing to keep.
    assert [item.record_id for item in by_chunk if isinstance(item, ResultLine)] == [
        "R1",
        "R2",
        "R3",
        "R6",
        "R9",
        "R11",
    ]


def test_a_chunk_whose_outputs_do_not_parse_together_is_read_line_by_line():
    nested = b'{"recordId":"R1","modelInput":{},"modelOutput":{"content":[{"modelOutput":{"a":1}}]}}\n'
    usual = line({"recordId": "R2", "modelInput": {}, "modelOutput": CLAUDE_OUTPUT})
    data = usual + nested + usual

    [items] = iter_output_chunks([data], file=FILE, family=AnthropicClaude())

    assert items == list(iter_output(data.splitlines(), file=FILE, family=AnthropicClaude()))
    assert [item.record_id for item in items] == ["R2", "R1", "R2"]
    assert items[0].output == ModelOutput("Summary.", 11, 2, "end_turn")


def test_lines_whose_tails_would_mend_each_other_in_one_array_are_each_read_alone():
    """An unclosed bracket on one line and closers on the next: no record gets another's output."""
    data = b"".join(
        [
            b'{"recordId":"A","modelInput":{},"modelOutput":["x"\n',
            b'{"recordId":"B","modelInput":{},"modelOutput":{"k":1}}]}\n',
            b'{"recordId":"C","modelInput":{},"modelOutput":'
            + json.dumps(CLAUDE_OUTPUT).encode()
            + b'},{"q":1}\n',
            line({"recordId": "D", "modelInput": {}, "modelOutput": CLAUDE_OUTPUT}),
        ]
    )

    [items] = iter_output_chunks([data], file=FILE, family=AnthropicClaude())

    assert items == list(iter_output(data.splitlines(), file=FILE, family=AnthropicClaude()))
    assert [type(item) for item in items] == [Quarantined, Quarantined, Quarantined, ResultLine]


@pytest.mark.parametrize("text", ["", "  \n"])
@pytest.mark.parametrize("read", ["line by line", "in chunks"])
def test_a_response_with_no_text_is_quarantined_naming_the_stop_reason_not_kept_as_a_summary(text, read):
    empty = {**CLAUDE_OUTPUT, "content": [{"type": "text", "text": text}], "stop_reason": "max_tokens"}
    data = line({"recordId": "Rabc", "modelInput": {"x": 1}, "modelOutput": empty})
    if read == "line by line":
        [item] = iter_output([data], file=FILE, family=AnthropicClaude())
    else:
        [[item]] = iter_output_chunks([data], file=FILE, family=AnthropicClaude())
    assert isinstance(item, Quarantined)
    assert item.record_id == "Rabc"
    assert "the model returned no text (stop reason max_tokens)" in item.reason


def test_an_output_line_past_the_size_limit_is_quarantined_and_the_lines_after_it_are_read(monkeypatch):
    import bedrock_batch.results as results

    monkeypatch.setattr(results, "MAX_LINE_BYTES", 1000)
    usual = line({"recordId": "R1", "modelInput": {}, "modelOutput": CLAUDE_OUTPUT})
    data = usual + b"{" + b"x" * 5000 + b"\n" + usual.replace(b"R1", b"R3")

    items = [
        item
        for items in iter_output_chunks(chunked(data, 300), file=FILE, family=AnthropicClaude())
        for item in items
    ]

    assert [type(item).__name__ for item in items] == ["ResultLine", "Quarantined", "ResultLine"]
    assert (items[1].line_no, items[2].record_id) == (2, "R3")
    assert "line runs past 1000 bytes" in items[1].reason


@pytest.mark.parametrize("outcome", ["modelOutput", "error"])
@pytest.mark.parametrize("read", ["line by line", "in chunks"])
def test_a_line_cut_off_and_run_into_the_next_gives_neither_record_the_other_ones_outcome(outcome, read):
    """A line cut mid-write with the next line glued on is not JSON; its tail is the next record's."""
    value = CLAUDE_OUTPUT if outcome == "modelOutput" else ERROR
    cut = json.dumps({"recordId": "Rcut", "modelInput": TRICKY_INPUT}).encode()[:40]
    whole = json.dumps({"recordId": "Rnext", "modelInput": {"x": 1}, outcome: value}).encode()
    data = cut + whole + b"\n"
    if read == "line by line":
        items = list(iter_output([data], file=FILE, family=AnthropicClaude()))
    else:
        [items] = iter_output_chunks([data], file=FILE, family=AnthropicClaude())
    assert items == [Quarantined(FILE, 1, "line is not valid JSON")]
