"""One endpoint serves S3, STS, Service Quotas and the admin API."""

from __future__ import annotations

import hashlib
import urllib.error

import pytest
from botocore.exceptions import ClientError

from tests.fixtures.local_aws import _http


def test_s3_round_trips_an_object_with_path_style_addressing(local_aws_clean):
    s3 = local_aws_clean.client("s3")
    s3.create_bucket(Bucket="roundtrip-bucket")
    s3.put_object(Bucket="roundtrip-bucket", Key="a/b.jsonl", Body=b"{}\n")
    assert s3.get_object(Bucket="roundtrip-bucket", Key="a/b.jsonl")["Body"].read() == b"{}\n"


def test_sts_reports_the_stand_in_account(local_aws_clean):
    assert local_aws_clean.client("sts").get_caller_identity()["Account"] == "123456789012"


def every_quota(client, operation: str) -> dict[str, dict]:
    pages = client.get_paginator(operation).paginate(ServiceCode="bedrock")
    return {q["QuotaName"]: q for page in pages for q in page["Quotas"]}


def test_the_aws_defaults_list_every_batch_quota_by_its_real_name(local_aws_clean):
    quotas = every_quota(local_aws_clean.client("service-quotas"), "list_aws_default_service_quotas")
    by_name = {name: quota["Value"] for name, quota in quotas.items()}
    assert by_name["Minimum number of records per batch inference job for Claude 3 Haiku"] == 100
    assert by_name["Records per input file per batch inference job for Claude 3 Haiku"] == 50_000
    assert by_name["Records per batch inference job for Nova Lite"] == 50_000
    assert by_name["Batch inference input file size (in GB) for Nova Lite"] == 1
    assert by_name["Batch inference job size (in GB) for Nova Lite"] == 5


def test_the_accounts_list_leaves_out_the_quotas_no_account_may_raise(local_aws_clean):
    quotas = every_quota(local_aws_clean.client("service-quotas"), "list_service_quotas")
    assert quotas and all(quota["Adjustable"] for quota in quotas.values())
    assert "Records per batch inference job for Nova Lite" in quotas
    assert "Minimum number of records per batch inference job for Nova Lite" not in quotas


def test_service_quotas_follow_the_admin_settings(local_aws_clean):
    local_aws_clean.admin.set_quotas(min_records_per_job=7, max_records_per_job=900)
    client = local_aws_clean.client("service-quotas")
    applied = every_quota(client, "list_service_quotas")
    defaults = every_quota(client, "list_aws_default_service_quotas")
    minimum = defaults["Minimum number of records per batch inference job for Claude 3 Haiku"]
    assert minimum["Value"] == 7  # not adjustable: its default is what is enforced
    assert applied["Records per batch inference job for Claude 3 Haiku"]["Value"] == 900
    assert defaults["Records per batch inference job for Claude 3 Haiku"]["Value"] == 50_000
    one = client.get_aws_default_service_quota(ServiceCode="bedrock", QuotaCode=minimum["QuotaCode"])["Quota"]
    assert (one["QuotaName"], one["Value"]) == (minimum["QuotaName"], 7)
    with pytest.raises(client.exceptions.NoSuchResourceException):  # no applied value to get
        client.get_service_quota(ServiceCode="bedrock", QuotaCode=minimum["QuotaCode"])
    records = applied["Records per batch inference job for Claude 3 Haiku"]["QuotaCode"]
    assert client.get_service_quota(ServiceCode="bedrock", QuotaCode=records)["Quota"]["Value"] == 900


def test_service_quotas_of_another_service_are_not_found(local_aws_clean):
    client = local_aws_clean.client("service-quotas")
    with pytest.raises(client.exceptions.NoSuchResourceException):
        client.list_service_quotas(ServiceCode="ec2")


def test_calls_records_iam_style_actions_and_can_be_cleared(local_aws_clean):
    s3 = local_aws_clean.client("s3")
    s3.create_bucket(Bucket="calls-bucket")
    s3.put_object(Bucket="calls-bucket", Key="k", Body=b"x")
    local_aws_clean.client("bedrock").list_model_invocation_jobs()
    assert local_aws_clean.calls() == ["s3:CreateBucket", "s3:PutObject", "bedrock:ListModelInvocationJobs"]
    local_aws_clean.admin.clear_calls()
    assert local_aws_clean.calls() == []


def test_calls_record_the_region_and_access_key_each_request_was_signed_with(local_aws_clean):
    local_aws_clean.client(
        "bedrock", region_name="eu-central-1", aws_access_key_id="AKIAEU"
    ).list_model_invocation_jobs()
    local_aws_clean.client("s3", region_name="ap-southeast-2", aws_access_key_id="AKIAAP").list_buckets()
    signed = [(call["action"], call["region"], call["access_key"]) for call in local_aws_clean.admin.calls()]
    assert signed == [
        ("bedrock:ListModelInvocationJobs", "eu-central-1", "AKIAEU"),
        ("s3:ListBuckets", "ap-southeast-2", "AKIAAP"),
    ]


def test_health_answers_ok(local_aws_clean):
    assert local_aws_clean.admin.health()["status"] == "ok"


def test_admin_rejects_an_unknown_fault_name(local_aws_clean):
    with pytest.raises(urllib.error.HTTPError) as info:
        _http("POST", f"{local_aws_clean.endpoint_url}/_local/faults", {"explode": True})
    assert info.value.code == 400


def test_multipart_uploads_work_and_are_logged_by_operation(local_aws_clean):
    s3 = local_aws_clean.client("s3")
    s3.create_bucket(Bucket="multipart-bucket")
    upload = s3.create_multipart_upload(Bucket="multipart-bucket", Key="big.jsonl")
    parts = []
    for number, chunk in enumerate([b"a" * 5 * 1024 * 1024, b"b" * 10], start=1):
        etag = s3.upload_part(
            Bucket="multipart-bucket",
            Key="big.jsonl",
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=chunk,
        )["ETag"]
        parts.append({"ETag": etag, "PartNumber": number})
    s3.complete_multipart_upload(
        Bucket="multipart-bucket",
        Key="big.jsonl",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": parts},
    )
    assert s3.head_object(Bucket="multipart-bucket", Key="big.jsonl")["ContentLength"] == 5 * 1024 * 1024 + 10
    assert local_aws_clean.calls()[1:] == [
        "s3:CreateMultipartUpload",
        "s3:UploadPart",
        "s3:UploadPart",
        "s3:CompleteMultipartUpload",
        "s3:HeadObject",
    ]


def test_completed_multipart_object_is_its_parts_in_order_under_the_s3_etag(local_aws_clean):
    s3 = local_aws_clean.client("s3")
    s3.create_bucket(Bucket="assembly-bucket")
    upload = s3.create_multipart_upload(Bucket="assembly-bucket", Key="o.jsonl", ChecksumAlgorithm="CRC32")
    bodies = [b"1" * 5 * 1024 * 1024, b"2" * 5 * 1024 * 1024, b"tail"]
    parts = []
    for number, body in enumerate(bodies, start=1):
        response = s3.upload_part(
            Bucket="assembly-bucket",
            Key="o.jsonl",
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=body,
            ChecksumAlgorithm="CRC32",
        )
        parts.append(
            {"ETag": response["ETag"], "PartNumber": number, "ChecksumCRC32": response["ChecksumCRC32"]}
        )
    done = s3.complete_multipart_upload(
        Bucket="assembly-bucket", Key="o.jsonl", UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )

    md5s = b"".join(hashlib.md5(body).digest() for body in bodies)
    assert done["ETag"].strip('"') == f"{hashlib.md5(md5s).hexdigest()}-3"
    assert s3.get_object(Bucket="assembly-bucket", Key="o.jsonl")["Body"].read() == b"".join(bodies)


def test_completing_with_a_wrong_part_etag_is_refused(local_aws_clean):
    s3 = local_aws_clean.client("s3")
    s3.create_bucket(Bucket="refuse-bucket")
    upload = s3.create_multipart_upload(Bucket="refuse-bucket", Key="o.jsonl")
    s3.upload_part(
        Bucket="refuse-bucket", Key="o.jsonl", UploadId=upload["UploadId"], PartNumber=1, Body=b"x"
    )
    with pytest.raises(ClientError, match="InvalidPart"):
        s3.complete_multipart_upload(
            Bucket="refuse-bucket",
            Key="o.jsonl",
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": [{"ETag": '"0123456789abcdef0123456789abcdef"', "PartNumber": 1}]},
        )
