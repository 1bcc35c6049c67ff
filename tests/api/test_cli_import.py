"""`poller track --file`: CSV and JSON lines, good and bad lines, on SQLite and PostgreSQL; the
parsing itself table-driven, without I/O."""

from __future__ import annotations

import json

import pytest

from cli.imports import parse, parse_labels
from tests.integration.test_cli import cli_env, poller
from worker.catalog import ItemSpec
from worker.errors import InputError

#: What the CLI tests here check (argument parsing, messages, exit codes, problem documents) is above the
#: database; the service layer under them is tested on SQLite and PostgreSQL. One database keeps
#: the suite within its budget.
SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

# -- parsing (pure) ------------------------------------------------------------------------


def test_csv_rows_become_specs_with_their_line_numbers():
    text = ("provider,ref,kind,account,interval,labels,external_id\n"
            "billit,1001,order,default,60,customer=acme;team=ar,INV-1\n"
            "\n"
            "billit,1002,,,,,\n"
            '"billit","10\n03"\n')  # a quoted cell over two lines: its entry starts on line 5
    entries = parse("items.csv", text)
    assert [line for line, _ in entries] == [2, 4, 5]
    assert entries[0][1] == ItemSpec("billit", "1001", kind="order", account="default", interval_s=60.0,
                                     labels={"customer": "acme", "team": "ar"}, external_id="INV-1")
    assert entries[1][1] == ItemSpec("billit", "1002")


def test_semicolon_separated_csv_as_spreadsheets_write_it():
    [(line, spec)] = parse("x.csv", 'provider;ref;labels\nbillit;7;"a=1;b=2"\n')
    assert (line, spec) == (2, ItemSpec("billit", "7", labels={"a": "1", "b": "2"}))


@pytest.mark.parametrize(("row", "field", "message"), [
    ("billit,,", "ref", "ref is missing"),
    (",5,", "provider", "provider is missing"),
    ("billit,5,soon", "interval", "interval must be a number of seconds, got 'soon'"),
    ("billit,5,0.01", "interval", "interval must be 0.1 s to 31 days, got 0.01 s"),
    ("billit,5,,customer", "labels", "labels 'customer' must be key=value"),
    ("billit,5,,bad key=1", "labels.bad key", "label key 'bad key' must be"),
    ("billit,5,,,,extra", None, "6 values, but the header has 4 columns"),
])
def test_a_bad_csv_row_is_refused_naming_the_field(row, field, message):
    [(line, err)] = parse("x.csv", f"provider,ref,interval,labels\n{row}\n")
    assert line == 2 and isinstance(err, InputError)
    assert err.field == field and message in str(err), str(err)


@pytest.mark.parametrize(("obj", "field", "message"), [
    ('{"provider": "billit"}', "ref", "ref is missing"),
    ('{"provider": "billit", "ref": 1001}', "ref", "ref must be a string, got 1001"),
    ('{"provider": "billit", "ref": "1", "labels": "a=b"}', "labels", "labels must be an object of strings"),
    ('{"provider": "billit", "ref": "1", "labels": {"a": 1}}', "labels.a", "label 'a' must be a string"),
    ('{"provider": "billit", "ref": "1", "interval": true}', "interval", "interval must be a number of seconds"),
    ('{"provider": "billit", "ref": "1", "lables": {}}', "lables", "unknown field 'lables'"),
    ('{"provider": "billit", "ref": "1", "interval": 5, "interval_seconds": 5}', "interval", "given twice"),
    ('["billit", "1"]', None, "a JSON list, not an object"),
    ('{"provider": "billit", "ref": "1"', None, "not JSON: "),
])
def test_a_bad_json_line_is_refused_naming_the_field(obj, field, message):
    text = '{"provider": "billit", "ref": "1000"}\n' + obj + "\n"
    entries = parse("x.jsonl", text)
    assert entries[0] == (1, ItemSpec("billit", "1000"))
    [(line, err)] = entries[1:]
    assert line == 2 and isinstance(err, InputError)
    assert err.field == field and message in str(err), str(err)


def test_json_lines_take_the_api_field_names_too():
    [(_, spec)] = parse("x.ndjson", '{"provider": "billit", "ref": "5", "interval_seconds": 30, '
                                    '"labels": {"a": "b"}, "external_id": "E", "kind": "order"}')
    assert spec == ItemSpec("billit", "5", kind="order", interval_s=30.0, labels={"a": "b"}, external_id="E")


@pytest.mark.parametrize(("name", "text", "message"), [
    ("x.csv", "", "has no header row"),
    ("x.csv", "provider,ref,lables\n", "unknown column 'lables' in the header row"),
    ("x.csv", "provider,kind\nbillit,order\n", "the header row has no ref column"),
    ("x.csv", "provider,ref,ref\n", "a column appears twice"),
    ("x.json", '[{"provider": "billit", "ref": "1"}]', "holds a JSON array; write one object per line"),
    ("x.jsonl", "provider,ref\nbillit,1\n", "x.jsonl is not JSON lines"),
])
def test_a_file_that_cannot_be_read_as_a_whole_is_one_error(name, text, message):
    with pytest.raises(InputError) as caught:
        parse(name, text)
    assert message in str(caught.value) and caught.value.field == "--file"


@pytest.mark.parametrize(("name", "text", "kind"), [
    ("items.txt", '{"provider": "billit", "ref": "1"}\n', "json"),
    ("items", "\ufeffprovider,ref\nbillit,1\n", "csv"),
])
def test_the_format_is_told_by_content_when_the_name_does_not(name, text, kind):
    assert parse(name, text) == [(1 if kind == "json" else 2, ItemSpec("billit", "1"))]


def test_labels_cell():
    assert parse_labels("a=1; b = two ;") == {"a": "1", "b": "two"}
    with pytest.raises(InputError, match="names a key twice"):
        parse_labels("a=1;a=2")


# -- the command, on both databases --------------------------------------------------------


@pytest.fixture
def env(db_url, tmp_path) -> dict[str, str]:
    return cli_env(db_url, tmp_path / "var")


def stored(env) -> dict[str, dict]:
    return {r["ref"]: r for r in json.loads(poller(env, "items", "--json").stdout)}


@SQLITE
def test_csv_import_stores_the_good_lines_and_reports_the_refused(env, tmp_path):
    """Counts and one reason per refused line naming its field; a refused line stores nothing, not
    even over an item already tracked; exit 2."""
    poller(env, "track", "billit", "3000", "--label", "customer=kept", "--interval", "30")
    path = tmp_path / "items.csv"
    path.write_text("provider,ref,kind,account,interval,labels,external_id\n"
                    "billit,1001,,,60,customer=acme;team=ar,INV-1\n"   # 2 created
                    "nope,1002,,,,,\n"                                  # 3 provider
                    "billit,12ab,,,,,\n"                                # 4 ref
                    "billit,3000,,,0.01,customer=new,\n"                # 5 interval (tracked item kept)
                    "billit,1003,,,,customer,\n"                        # 6 labels
                    "billit,1004,,acme,,,\n"                            # 7 account
                    "billit,3000,,,,,\n"                                # 8 already tracked
                    "billit,1001,,,,,INV-1b\n"                          # 9 already (line 2)
                    "billit,1005\n")                                    # 10 created
    proc = poller(env, "track", "--file", str(path), ok=False)
    assert proc.returncode == 2, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == "created 2, already tracked 2, refused 5"
    assert [line.split(":")[0] for line in out[1:]] == [f"line {n}" for n in (3, 4, 5, 6, 7)]
    reasons = dict(line.split(": ", 1) for line in out[1:])
    assert reasons["line 3"].startswith("provider: unknown provider 'nope'")
    assert reasons["line 4"].startswith("ref: ") and "'12ab'" in reasons["line 4"]
    assert reasons["line 5"] == "interval must be 0.1 s to 31 days, got 0.01 s"
    assert reasons["line 6"].startswith("labels 'customer' must be key=value")
    assert reasons["line 7"].startswith("account: billit has no account 'acme'")
    assert "importing" in proc.stderr and "Traceback" not in proc.stderr
    items = stored(env)
    assert sorted(items) == ["1001", "1005", "3000"]
    assert (items["1001"]["labels"], items["1001"]["external_id"], items["1001"]["interval_seconds"]) == (
        {"customer": "acme", "team": "ar"}, "INV-1b", 60.0)
    assert (items["3000"]["labels"], items["3000"]["interval_seconds"]) == ({"customer": "kept"}, 30.0)


@SQLITE
def test_jsonl_import_in_chunks_then_again_is_all_already_tracked(env, tmp_path):
    """2,500 good lines (three chunks) and two bad ones: stored and counted; the same file again
    creates nothing and refuses the same lines."""
    lines = [json.dumps({"provider": "billit", "ref": str(10_000 + n), "labels": {"batch": "b1"},
                         "external_id": f"INV-{n}"}) for n in range(2500)]
    lines.insert(1200, '{"provider": "billit", "ref": 17}')
    lines.insert(10, "not json")
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(lines) + "\n")
    first = poller(env, "track", "--file", str(path), ok=False)
    assert first.returncode == 2, first.stderr
    assert first.stdout.splitlines() == ["created 2500, already tracked 0, refused 2",
                                         "line 11: not JSON: Expecting value at column 1",
                                         "line 1202: ref must be a string, got 17"]
    items = stored(env)
    assert len(items) == 2500 and items["12499"]["external_id"] == "INV-2499"
    assert items["10000"]["labels"] == {"batch": "b1"}
    again = poller(env, "track", "--file", str(path), ok=False)
    assert again.stdout.splitlines()[0] == "created 0, already tracked 2500, refused 2"
    assert len(stored(env)) == 2500


@SQLITE
def test_an_import_with_nothing_refused_exits_0_and_reads_standard_input(env):
    proc = poller(env, "track", "--file", "-", input="provider,ref,labels\nbillit,1,a=b\nbillit,2,\n")
    assert proc.stdout.splitlines() == ["created 2, already tracked 0, refused 0"]
    assert stored(env)["1"]["labels"] == {"a": "b"}


@pytest.mark.parametrize(("content", "message"), [
    (None, "--file {path}: no such file"),
    (b"\xff\xfeprovider,ref\n", "--file {path} is not UTF-8 text"),
    (b"provider,ref,lables\n", "unknown column 'lables' in the header row"),
])
@SQLITE
def test_a_file_that_cannot_be_read_is_a_clear_error_and_stores_nothing(env, tmp_path, content, message):
    path = tmp_path / "items.csv"
    if content is not None:
        path.write_bytes(content)
    proc = poller(env, "track", "--file", str(path), ok=False)
    assert proc.returncode == 2 and message.format(path=path) in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and stored(env) == {}
