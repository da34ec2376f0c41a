"""The work file's optional keys that steer the scheduler: affinity (region, zone) and run-size hints."""

from __future__ import annotations

import pytest

from workset_monitor.layout import validate_folder
from workset_monitor.scheduling import budget_cap

WORK = 'dy-r: "-p help"\n'
KEYS = ["stage_samples.tsv", "daylily_work.yaml", "daylily_info.yaml", "sample_data/S1_R1.fastq.gz"]
SHEET = (
    "RUN_ID\tSAMPLE_ID\tEXPERIMENTID\tSAMPLE_TYPE\tLIB_PREP\tSEQ_VENDOR\tSEQ_PLATFORM\tLANE\tSEQBC_ID\t"
    "PATH_TO_CONCORDANCE_DATA_DIR\tR1_FQ\tR2_FQ\tSTAGE_DIRECTIVE\tSTAGE_TARGET\tSUBSAMPLE_PCT\tIS_POS_CTRL\t"
    "IS_NEG_CTRL\tN_X\tN_Y\tEXTERNAL_SAMPLE_ID\n"
    "R1\tS1\tE1\tblood\tpcrfree\tILMN\tNOVASEQX\tL001\tAC\tna\tsample_data/S1_R1.fastq.gz\t\tstage_data\t/fsx/\tna\t"
    "false\tfalse\t1\t1\tX1\n"
)


def check(extra: str):
    return validate_folder(KEYS, SHEET, WORK + extra)


def test_affinity_and_size_hints_are_read():
    report = check("region: us-west-2\naz: us-west-2b\npipeline: wes\ncoverage: 100\nvcpus: 64\nbudget: $120\n")

    assert report.reasons == ()
    work = report.work
    assert work is not None
    assert (work.region, work.availability_zone, work.pipeline, work.coverage, work.vcpus) == (
        "us-west-2",
        "us-west-2b",
        "wes",
        100,
        64,
    )
    assert budget_cap(work.budget) == 120.0


def test_the_hints_are_optional():
    work = check("").work

    assert work is not None and (work.region, work.coverage, work.vcpus, work.pipeline) == (None, None, None, None)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("coverage: 0\n", "daylily_work.yaml: coverage must be a number of x above 0 and at most 10000"),
        ("coverage: thirty\n", "daylily_work.yaml: coverage must be a number of x above 0 and at most 10000"),
        ("vcpus: 2.5\n", "daylily_work.yaml: vcpus must be a whole number from 1 to 100000"),
        ("vcpus: true\n", "daylily_work.yaml: vcpus must be a whole number from 1 to 100000"),
        ("pipeline: [wgs]\n", "daylily_work.yaml: pipeline must be a short name such as wgs or wes"),
        ("region: [a, b]\n", "daylily_work.yaml: region must be a single value"),
    ],
)
def test_bad_hints_are_reasons(line, reason):
    assert check(line).reasons == (reason,)


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("region: us-west\n", "daylily_work.yaml: region 'us-west' is not an AWS name such as us-west-2"),
        ("region: <b>west</b>\n", "daylily_work.yaml: region '<b>west</b>' is not an AWS name such as us-west-2"),
        (
            "az: us-west-2 b\n",
            "daylily_work.yaml: availability_zone 'us-west-2 b' is not an AWS name such as us-west-2b",
        ),
    ],
)
def test_a_region_or_zone_that_is_no_aws_name_is_a_reason(extra, reason):
    # a typo would otherwise match no cluster and wait for ever, announcing a cluster needed in a region that is none
    assert reason in check(extra).reasons


@pytest.mark.parametrize("zone", ["us-west-2b", "us-west-2-lax-1a", "eu-central-1c", "us-gov-west-1a"])
def test_zones_of_every_kind_are_names(zone):
    assert check(f"availability_zone: {zone}\n").reasons == ()
