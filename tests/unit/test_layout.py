"""The workset folder: sentinel keys, the sample sheet and the work file, validated without AWS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from workset_monitor.layout import (
    SAMPLE_SHEET_COLUMNS,
    SentinelKey,
    parse_sentinel_key,
    validate_folder,
)
from workset_monitor.models import Priority

PREFIX = "daylily_monitoring/active_worksets/"

# Written from DESIGN.md ("The workset folder"), independently of layout.SAMPLE_SHEET_COLUMNS.
COLUMNS = [
    "RUN_ID",
    "SAMPLE_ID",
    "EXPERIMENTID",
    "SAMPLE_TYPE",
    "LIB_PREP",
    "SEQ_VENDOR",
    "SEQ_PLATFORM",
    "LANE",
    "SEQBC_ID",
    "PATH_TO_CONCORDANCE_DATA_DIR",
    "R1_FQ",
    "R2_FQ",
    "STAGE_DIRECTIVE",
    "STAGE_TARGET",
    "SUBSAMPLE_PCT",
    "IS_POS_CTRL",
    "IS_NEG_CTRL",
    "N_X",
    "N_Y",
    "EXTERNAL_SAMPLE_ID",
]

FOLDER_KEYS = (
    "stage_samples.tsv",
    "daylily_work.yaml",
    "daylily_info.yaml",
    "sample_data/S1_L001_R1.fastq.gz",
    "sample_data/S1_L001_R2.fastq.gz",
)
WORK = 'dy-r: "-p produce_snv_concordances -k -j 4"\n'


def row(**values: str) -> list[str]:
    """One sample row of 20 fields; keyword arguments override columns by name."""
    fields = {
        "RUN_ID": "RUN1",
        "SAMPLE_ID": "S1",
        "EXPERIMENTID": "EXP1",
        "SAMPLE_TYPE": "blood",
        "LIB_PREP": "TruSeqPCRFree",
        "SEQ_VENDOR": "ILMN",
        "SEQ_PLATFORM": "NOVASEQX",
        "LANE": "L001",
        "SEQBC_ID": "CAAGGTAC+GTACTCAT",
        "PATH_TO_CONCORDANCE_DATA_DIR": "s3://refs/giab/HG002/",
        "R1_FQ": "sample_data/S1_L001_R1.fastq.gz",
        "R2_FQ": "sample_data/S1_L001_R2.fastq.gz",
        "STAGE_DIRECTIVE": "stage_data",
        "STAGE_TARGET": "/fsx/staged_sample_data/",
        "SUBSAMPLE_PCT": "na",
        "IS_POS_CTRL": "true",
        "IS_NEG_CTRL": "false",
        "N_X": "1",
        "N_Y": "1",
        "EXTERNAL_SAMPLE_ID": "NA24385",
    }
    fields.update(values)
    return [fields[column] for column in COLUMNS]


def sheet(*rows: list[str], header: list[str] | None = None) -> str:
    lines = [header or COLUMNS, *rows]
    return "".join("\t".join(line) + "\n" for line in lines)


def check(sample_sheet: str | None = None, work_file: str | None = WORK, keys=FOLDER_KEYS):
    return validate_folder(keys, sheet(row()) if sample_sheet is None else sample_sheet, work_file)


def work_of(work_file: str):
    return check(work_file=work_file)


def test_the_sheet_columns_are_the_designed_twenty_in_order():
    assert list(SAMPLE_SHEET_COLUMNS) == COLUMNS
    assert len(COLUMNS) == 20


def test_a_minimal_valid_folder_gives_no_reasons():
    report = check()

    assert report.reasons == ()
    assert report.valid is True
    assert report.work is not None and report.work.run_command == "-p produce_snv_concordances -k -j 4"
    assert report.sample_count == 1


# --- parse_sentinel_key ----------------------------------------------------------------------------------------------


def test_a_ready_sentinel_directly_in_a_folder_under_the_prefix_is_parsed():
    parsed = parse_sentinel_key(f"{PREFIX}hg002-giab-wgs-30x/daylily.ready", PREFIX)

    assert parsed == SentinelKey(
        workset_id="hg002-giab-wgs-30x", folder=f"{PREFIX}hg002-giab-wgs-30x/", sentinel="daylily.ready"
    )


@pytest.mark.parametrize(
    "key",
    [
        "other_prefix/ws1/daylily.ready",
        "daylily_monitoring/active_worksets_old/ws1/daylily.ready",
        "daylily_monitoring/ws1/daylily.ready",
        f"x/{PREFIX}ws1/daylily.ready",
    ],
)
def test_a_key_outside_the_prefix_is_not_a_sentinel(key):
    assert parse_sentinel_key(key, PREFIX) is None


@pytest.mark.parametrize(
    "key",
    [
        f"{PREFIX}ws1/sub/daylily.ready",
        f"{PREFIX}ws1/sample_data/daylily.ready",
        f"{PREFIX}a/b/c/daylily.ignore",
        f"{PREFIX}daylily.ready",
        f"{PREFIX}ws1/daylily.ready/",
    ],
)
def test_a_sentinel_nested_deeper_or_at_the_prefix_itself_is_refused(key):
    assert parse_sentinel_key(key, PREFIX) is None


@pytest.mark.parametrize(
    "file_name", ["stage_samples.tsv", "daylily_work.yaml", "daylily.readyx", "daylily.READY", "daylily", ""]
)
def test_a_file_that_is_not_a_sentinel_is_refused(file_name):
    assert parse_sentinel_key(f"{PREFIX}ws1/{file_name}", PREFIX) is None


@pytest.mark.parametrize(
    "sentinel",
    ["daylily.ready", "daylily.ignore", "daylily.lock", "daylily.in_progress", "daylily.complete", "daylily.error"],
)
def test_trigger_and_system_sentinels_are_recognised(sentinel):
    parsed = parse_sentinel_key(f"{PREFIX}ws1/{sentinel}", PREFIX)

    assert parsed is not None
    assert (parsed.workset_id, parsed.folder, parsed.sentinel) == ("ws1", f"{PREFIX}ws1/", sentinel)


@pytest.mark.parametrize(
    "name", ["GIAB trio run 3", "Probe Müller Ünal", "東京 サンプル", "échantillon_α-β", "a b", "é" * 256]
)
def test_names_with_spaces_and_non_ascii_letters_are_accepted(name):
    parsed = parse_sentinel_key(f"{PREFIX}{name}/daylily.ready", PREFIX)

    assert parsed is not None
    assert parsed.workset_id == name
    assert parsed.folder == f"{PREFIX}{name}/"


@pytest.mark.parametrize(
    "name",
    ["a\x00b", "a\tb", "a\nb", "a\rb", "a\x1b[31mb", "a\x7fb", "\x07bell", "a\x9bb", "a\x85b", "a\x90b"],
    ids=["nul", "tab", "newline", "cr", "escape", "del", "bell", "c1-csi", "c1-nel", "c1-dcs"],
)
def test_names_with_control_characters_are_refused(name):
    # C1 controls (U+0080-U+009F) too: they are terminal escapes as much as ESC is
    assert parse_sentinel_key(f"{PREFIX}{name}/daylily.ready", PREFIX) is None


@pytest.mark.parametrize("name", ["", " ws1", "ws1 ", ".", "..", "é" * 257], ids=str)
def test_names_empty_padded_dot_or_too_long_are_refused(name):
    assert parse_sentinel_key(f"{PREFIX}{name}/daylily.ready", PREFIX) is None


def test_an_empty_prefix_makes_every_top_level_folder_a_workset():
    assert parse_sentinel_key("ws1/daylily.ready", "") == SentinelKey("ws1", "ws1/", "daylily.ready")
    assert parse_sentinel_key("a/ws1/daylily.ready", "") is None
    assert parse_sentinel_key("daylily.ready", "") is None


# --- the example folders ---------------------------------------------------------------------------------------------


def test_the_hg002_example_is_valid_with_its_work_spec(example):
    folder = example("hg002-giab-wgs-30x")

    report = validate_folder(folder.keys, folder.sample_sheet, folder.work_file)

    assert report.reasons == ()
    assert report.valid is True
    work = report.work
    assert work is not None
    assert work.priority is Priority.URGENT
    assert work.deadline == datetime(2027, 1, 15, 17, 0, tzinfo=UTC)
    assert work.deadline.utcoffset() == timedelta(0)
    assert work.run_command == (
        "-p produce_snv_concordances produce_multiqc_final_wgs -k -j 8 --config genome_build='hg38' "
        "aligners=['bwa2a','sent'] dedupers=['dppl'] snv_callers=['deep','sentd']"
    )
    assert work.clone_args == "-d hg002_giab_wgs_30x"
    assert work.export_uri == "s3://daylily-example-results/worksets/hg002-giab-wgs-30x/"
    assert work.workdir_name == "hg002_giab_wgs_30x"
    assert work.budget == "giab-benchmarking-2026"
    assert work.cluster_name is None
    assert work.depends_on == ()
    # two samples (HG002, HG004), two lanes each
    assert len(report.samples) == 4
    assert report.sample_count == 2


def test_the_hg003_example_is_valid_with_its_work_spec(example):
    folder = example("hg003-wes-normal")

    report = validate_folder(folder.keys, folder.sample_sheet, folder.work_file)

    assert report.reasons == ()
    work = report.work
    assert work is not None
    assert work.priority is Priority.NORMAL
    assert work.deadline is None
    assert work.run_command == (
        "-p produce_snv_concordances -k -j 4 --config genome_build='hg38' aligners=['bwa2a'] dedupers=['dppl'] "
        "snv_callers=['deep']"
    )
    assert work.clone_args == "-d hg003_wes_normal"
    assert work.cluster_name is None
    assert work.depends_on == ()
    assert len(report.samples) == 1
    assert report.sample_count == 1


def test_the_broken_example_gives_every_reason_of_its_readme(example):
    # GIVEN the folder examples/README.md describes as broken in five independent ways
    folder = example("broken-sheet-example")

    # WHEN it is validated
    report = validate_folder(folder.keys, folder.sample_sheet, folder.work_file)

    # THEN every one of the five problems is reported, not only the first
    reasons = report.reasons
    assert report.valid is False
    assert report.work is None

    def found(*parts: str) -> list[str]:
        return [reason for reason in reasons if all(part in reason for part in parts)]

    assert found("stage_samples.tsv header", "19 columns, expected 20", "missing N_Y"), reasons
    assert found("stage_samples.tsv line 3", "18 fields, expected 20"), reasons
    assert found("daylily_work.yaml", "dy-r", "missing"), reasons
    assert found("daylily_work.yaml", "priority 'asap'", "urgent|normal|low"), reasons
    assert found("daylily_info.yaml is missing"), reasons
    # AND nothing README lists as "not a problem" is reported
    assert not [r for r in reasons if "YAML" in r or "sample_data" in r or "_FQ" in r or "deadline" in r], reasons


# --- the sample sheet ------------------------------------------------------------------------------------------------


def test_a_header_out_of_order_is_reported_once():
    header = list(COLUMNS)
    header[0], header[1] = header[1], header[0]

    report = check(sheet(row(), row(LANE="L002"), header=header))

    assert report.reasons == ("stage_samples.tsv header: 20 columns, expected 20; columns out of order",)
    assert report.samples == ()


def test_a_header_with_an_unknown_column_names_it():
    header = [*COLUMNS[:-1], "EXTERNAL_ID"]

    report = check(sheet(row(), header=header))

    assert len(report.reasons) == 1
    assert "missing EXTERNAL_SAMPLE_ID" in report.reasons[0]
    assert "unexpected EXTERNAL_ID" in report.reasons[0]


def test_a_bom_prefixed_sheet_is_valid():
    report = check("\ufeff" + sheet(row(), row(LANE="L002")))

    assert report.reasons == ()
    assert len(report.samples) == 2


def test_a_sheet_with_a_header_and_no_data_rows_is_invalid():
    report = check(sheet())

    assert report.reasons == ("stage_samples.tsv has a header but no sample rows",)
    assert report.valid is False


@pytest.mark.parametrize("text", ["", "\n\n", "\t\t\n"], ids=["empty", "blank-lines", "tabs-only"])
def test_an_empty_sheet_is_invalid(text):
    assert check(text).reasons == ("stage_samples.tsv is empty",)


def test_blank_lines_are_tolerated():
    lines = ["", "\t".join(COLUMNS), "", "\t".join(row()), "   ", "\t\t", "\t".join(row(LANE="L002")), "", ""]
    text = "\n".join(lines)

    report = check(text)

    assert report.reasons == ()
    assert [sample["LANE"] for sample in report.samples] == ["L001", "L002"]


def test_a_reason_names_the_file_line_even_after_blank_lines():
    # GIVEN a blank line before the header, and blank lines between the rows
    lines = ["", "\t".join(COLUMNS), "", "\t".join(row()), "", "", "\t".join(row(LANE="L002")[:-1]), "\t".join(row())]
    text = "\n".join(lines) + "\n"

    # WHEN / THEN the short row is named by its line in the file (7), and so is the repeated row (8)
    assert check(text).reasons == (
        "stage_samples.tsv line 7: 19 fields, expected 20",
        "stage_samples.tsv line 8: RUN_ID, SAMPLE_ID and LANE repeat an earlier row",
    )


@pytest.mark.parametrize("count", [19, 21])
def test_a_row_with_the_wrong_field_count_is_reported_with_its_line(count):
    fields = row(LANE="L002")
    bad = fields[:count] if count < 20 else [*fields, "extra"]

    report = check(sheet(row(), bad))

    assert report.reasons == (f"stage_samples.tsv line 3: {count} fields, expected 20",)
    assert len(report.samples) == 1


def test_a_relative_r1_path_not_in_the_folder_is_reported():
    report = check(sheet(row(R1_FQ="sample_data/S9_L001_R1.fastq.gz")))

    assert report.reasons == ("stage_samples.tsv line 2: R1_FQ 'sample_data/S9_L001_R1.fastq.gz' is not in the folder",)


def test_a_dot_slash_relative_path_in_the_folder_is_accepted():
    assert check(sheet(row(R1_FQ="./sample_data/S1_L001_R1.fastq.gz"))).reasons == ()


def test_a_path_outside_sample_data_is_reported():
    report = check(sheet(row(R2_FQ="reads/S1_L001_R2.fastq.gz")))

    assert len(report.reasons) == 1
    assert report.reasons[0] == (
        "stage_samples.tsv line 2: R2_FQ 'reads/S1_L001_R2.fastq.gz' is neither an s3:// URI nor a path under "
        "sample_data/"
    )


@pytest.mark.parametrize("uri", ["s3://bucket-only", "s3://bucket-only/", "s3:///key/R1.fastq.gz", "s3://"])
def test_a_bad_s3_uri_is_reported(uri):
    report = check(sheet(row(R1_FQ=uri)))

    assert report.reasons == (f"stage_samples.tsv line 2: R1_FQ {uri!r} is not a full s3://bucket/key URI",)


def test_a_full_s3_uri_need_not_be_in_the_folder():
    assert check(sheet(row(R1_FQ="s3://seq-bucket/runs/x/S1_R1.fastq.gz"))).reasons == ()


def test_an_empty_r2_is_allowed_for_single_end_data():
    report = check(sheet(row(R2_FQ="")))

    assert report.reasons == ()
    assert report.samples[0]["R2_FQ"] == ""


def test_an_empty_r1_is_reported():
    report = check(sheet(row(R1_FQ="")))

    assert len(report.reasons) == 1
    assert report.reasons[0].startswith("stage_samples.tsv line 2: R1_FQ ''")


def test_empty_sample_and_run_ids_are_reported():
    report = check(sheet(row(SAMPLE_ID="", RUN_ID=" ")))

    assert set(report.reasons) == {
        "stage_samples.tsv line 2: SAMPLE_ID is empty",
        "stage_samples.tsv line 2: RUN_ID is empty",
    }


def test_a_row_repeating_run_sample_and_lane_is_reported():
    report = check(sheet(row(), row(LANE="L002"), row()))

    assert report.reasons == ("stage_samples.tsv line 4: RUN_ID, SAMPLE_ID and LANE repeat an earlier row",)


def test_sample_count_is_the_number_of_distinct_sample_ids():
    rows = [row(), row(LANE="L002"), row(SAMPLE_ID="S2", R1_FQ="s3://b/S2_R1.fq.gz", R2_FQ="")]

    report = check(sheet(*rows))

    assert report.reasons == ()
    assert len(report.samples) == 3
    assert report.sample_count == 2


# --- the folder ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["stage_samples.tsv", "daylily_work.yaml", "daylily_info.yaml"])
def test_a_missing_required_file_is_named(missing):
    keys = [key for key in FOLDER_KEYS if key != missing]

    report = validate_folder(keys, sheet(row()), WORK)

    assert f"{missing} is missing" in report.reasons
    assert report.valid is False


S3_ONLY_SHEET = sheet(row(R1_FQ="s3://b/S1_R1.fq.gz", R2_FQ="s3://b/S1_R2.fq.gz"))


def test_a_folder_without_sample_data_objects_is_invalid():
    keys = ["stage_samples.tsv", "daylily_work.yaml", "daylily_info.yaml"]

    assert check(S3_ONLY_SHEET, keys=keys).reasons == ("sample_data/ holds no object",)


def test_the_sample_data_folder_marker_alone_does_not_count():
    keys = ["stage_samples.tsv", "daylily_work.yaml", "daylily_info.yaml", "sample_data/"]

    assert check(S3_ONLY_SHEET, keys=keys).reasons == ("sample_data/ holds no object",)


def test_absent_texts_are_not_parsed():
    report = validate_folder(["daylily_info.yaml", "sample_data/x"], None, None)

    assert report.reasons == ("stage_samples.tsv is missing", "daylily_work.yaml is missing")
    assert report.work is None
    assert report.valid is False


# --- the work file ---------------------------------------------------------------------------------------------------


def test_a_yaml_syntax_error_is_reported_with_its_line():
    report = work_of("dy-r: x\nbudget: a\n  bad: value\n")

    assert report.reasons == ("daylily_work.yaml is not valid YAML at line 3",)
    assert report.work is None


@pytest.mark.parametrize("text", ["- dy-r: x\n", "just a string\n", "", "# only a comment\n", "42\n"], ids=repr)
def test_a_work_file_that_is_not_a_mapping_is_reported(text):
    report = work_of(text)

    assert report.reasons == ("daylily_work.yaml must be a mapping of keys to values",)
    assert report.work is None


@pytest.mark.parametrize("key", ["dy-r", "dy_r", "run", "run_cmd", "run-command"])
def test_every_alias_of_the_run_command_is_resolved(key):
    report = work_of(f'{key}: "-p help"\n')

    assert report.reasons == ()
    assert report.work is not None and report.work.run_command == "-p help"


@pytest.mark.parametrize("key", ["day-clone", "day_clone_args", "clone"])
def test_every_alias_of_the_clone_arguments_is_resolved(key):
    report = work_of(f'dy-r: "-p help"\n{key}: "-d my_run"\n')

    assert report.reasons == ()
    assert report.work is not None and report.work.clone_args == "-d my_run"


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("dy-r: a\nrun: b\n", "dy-r and run"),
        ("dy_r: a\nrun-command: a\n", "dy_r and run-command"),
        ("dy-r: a\nday-clone: x\nclone: y\n", "day-clone and clone"),
    ],
)
def test_two_aliases_of_one_key_are_reported(text, keys):
    report = work_of(text)

    assert report.reasons == (f"daylily_work.yaml: {keys} say the same thing; give one",)
    assert report.valid is False


@pytest.mark.parametrize("text", ['dy-r: ""\n', 'dy-r: "   "\n', "dy-r: 42\n", "dy-r: [a, b]\n"], ids=repr)
def test_an_empty_or_non_string_run_command_is_reported(text):
    report = work_of(text)

    assert report.reasons == ("daylily_work.yaml: dy-r must be a non-empty string",)
    assert report.work is None


@pytest.mark.parametrize("text", ["dy-r:\n", "priority: low\n"], ids=["null", "absent"])
def test_a_missing_run_command_is_reported(text):
    assert work_of(text).reasons == ("daylily_work.yaml: the run command (dy-r) is missing",)


def test_depends_on_as_a_single_string_is_a_list_of_one():
    report = work_of("dy-r: x\ndepends_on: hg002-giab-wgs-30x\n")

    assert report.reasons == ()
    assert report.work is not None and report.work.depends_on == ("hg002-giab-wgs-30x",)


def test_depends_on_as_a_list_keeps_its_order():
    report = work_of("dy-r: x\ndepends_on:\n  - b ws\n  - a-ws\n")

    assert report.work is not None and report.work.depends_on == ("b ws", "a-ws")


@pytest.mark.parametrize(
    "value", ["{a: 1}", "5", "[a, 3]", '[a, ""]', "[[a]]"], ids=["mapping", "int", "int-item", "empty", "nested"]
)
def test_depends_on_not_a_list_of_names_is_reported(value):
    report = work_of(f"dy-r: x\ndepends_on: {value}\n")

    assert report.reasons == ("daylily_work.yaml: depends_on must be a list of workset names",)
    assert report.work is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"2027-01-15T17:00:00Z"', datetime(2027, 1, 15, 17, 0, tzinfo=UTC)),
        ("2027-01-15T17:00:00Z", datetime(2027, 1, 15, 17, 0, tzinfo=UTC)),
        ('"2027-01-15T17:00:00+02:00"', datetime(2027, 1, 15, 15, 0, tzinfo=UTC)),
        ('"2027-01-15T17:00:00"', datetime(2027, 1, 15, 17, 0, tzinfo=UTC)),
        ("2027-01-15 17:00:00", datetime(2027, 1, 15, 17, 0, tzinfo=UTC)),
        ('"2027-01-15"', datetime(2027, 1, 15, tzinfo=UTC)),
        ("2027-01-15", datetime(2027, 1, 15, tzinfo=UTC)),
    ],
    ids=["quoted-z", "yaml-z", "offset", "naive-string", "naive-yaml", "date-string", "date-yaml"],
)
def test_a_deadline_is_an_aware_datetime_and_naive_ones_are_utc(value, expected):
    report = work_of(f"dy-r: x\ndeadline: {value}\n")

    assert report.reasons == ()
    deadline = report.work.deadline
    assert deadline is not None and deadline.tzinfo is not None
    assert deadline == expected


def test_a_deadline_keeps_its_own_offset():
    report = work_of('dy-r: x\ndeadline: "2027-01-15T17:00:00+02:00"\n')

    assert report.work.deadline.utcoffset() == timezone(timedelta(hours=2)).utcoffset(None)


@pytest.mark.parametrize("value", ['"next tuesday"', '"2027-13-45"', "42", "[2027]", '""'])
def test_an_invalid_deadline_is_reported(value):
    report = work_of(f"dy-r: x\ndeadline: {value}\n")

    assert len(report.reasons) == 1
    assert report.reasons[0].startswith("daylily_work.yaml: deadline ")
    assert report.reasons[0].endswith("is not an ISO-8601 date or time")
    assert report.work is None


@pytest.mark.parametrize("value", ["urgent", "normal", "low"])
def test_every_known_priority_is_parsed(value):
    report = work_of(f"dy-r: x\npriority: {value}\n")

    assert report.work is not None and report.work.priority is Priority(value)


def test_the_priority_defaults_to_normal():
    assert work_of("dy-r: x\n").work.priority is Priority.NORMAL


@pytest.mark.parametrize("value", ["asap", "URGENT", "1", "high"])
def test_an_unknown_priority_is_reported(value):
    report = work_of(f"dy-r: x\npriority: {value}\n")

    assert len(report.reasons) == 1
    assert report.reasons[0].endswith("is not one of urgent|normal|low")
    assert report.work is None


def test_scalar_options_become_strings_and_lists_are_refused():
    report = work_of("dy-r: x\nbudget: 1200\ncluster_name: day-wgs-usw2b\n")

    assert report.work is not None
    assert (report.work.budget, report.work.cluster_name) == ("1200", "day-wgs-usw2b")
    assert work_of("dy-r: x\nexport_uri: [a, b]\n").reasons == ("daylily_work.yaml: export_uri must be a single value",)


def test_every_work_file_problem_is_reported_not_only_the_first():
    report = work_of("priority: asap\ndepends_on: 5\ndeadline: soon\n")

    assert len(report.reasons) == 4
    assert report.work is None


def test_a_work_file_may_set_its_number_of_attempts():
    report = check(work_file=WORK + "max_attempts: 5\n")

    assert report.reasons == ()
    assert report.work is not None and report.work.max_attempts == 5


@pytest.mark.parametrize("value", ["0", "11", "two", "true", "2.5"])
def test_a_number_of_attempts_out_of_bounds_is_reported(value):
    report = check(work_file=WORK + f"max_attempts: {value}\n")

    assert report.reasons == ("daylily_work.yaml: max_attempts must be a whole number from 1 to 10",)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("priority: [urgent]\n", "daylily_work.yaml: priority a list is not one of urgent|normal|low"),
        ("priority: {a: 1}\n", "daylily_work.yaml: priority a mapping is not one of urgent|normal|low"),
        ("deadline: 2027-02-30\n", "daylily_work.yaml holds a value YAML cannot read: day is out of range for month"),
        ("budget: [a, b]\n", "daylily_work.yaml: budget must be a single value"),
        ("budget: " + "x" * 3000 + "\n", "daylily_work.yaml: budget is longer than 2048 characters"),
    ],
    ids=["priority-list", "priority-mapping", "impossible-date", "budget-list", "budget-huge"],
)
def test_hostile_work_file_values_are_reasons_not_crashes(line, reason):
    assert check(work_file=WORK + line).reasons == (reason,)


def test_a_huge_run_command_is_a_reason():
    report = check(work_file=f'dy-r: "{"x" * 9000}"\n')

    assert report.reasons == ("daylily_work.yaml: dy-r is 9000 characters, more than 8192",)


def test_an_alias_bomb_is_reported_quickly_and_shortly():
    # GIVEN a "billion laughs" deadline: 9 levels of aliases, each holding nine of the level below
    levels = ['a0: &a0 ["lol"]'] + [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 10)]
    work = WORK + "\n".join(levels) + "\ndeadline: *a9\n"

    report = check(work_file=work)

    assert report.reasons == ("daylily_work.yaml: deadline a list is not an ISO-8601 date or time",)


def test_a_field_longer_than_the_csv_limit_is_a_reason():
    report = check(sample_sheet=sheet(row(SAMPLE_ID="S" * 200_000)))

    assert len(report.reasons) == 1
    assert report.reasons[0].startswith("stage_samples.tsv line 2 cannot be read: field larger than field limit")


def test_a_stray_quote_is_taken_literally_and_the_lines_stay_right():
    report = check(sample_sheet=sheet(row(SAMPLE_ID='"HG002'), row(SAMPLE_ID="HG003"), ["only", "three", "fields"]))

    assert report.reasons == ("stage_samples.tsv line 4: 3 fields, expected 20",)


def test_thousands_of_bad_lines_give_fifty_reasons_and_a_count():
    report = check(sample_sheet=sheet(*(["x"] for _ in range(60_000))))

    assert len(report.reasons) == 51
    assert report.reasons[-1] == "... and 59950 more problems"


def test_a_decomposed_unicode_name_is_registered_under_its_composed_id():
    decomposed = "cafe\u0301"  # "café" as macOS writes it

    parsed = parse_sentinel_key(f"{PREFIX}{decomposed}/daylily.ready", PREFIX)

    assert parsed is not None
    assert parsed.workset_id == "caf\u00e9"
    assert parsed.folder == f"{PREFIX}{decomposed}/"
