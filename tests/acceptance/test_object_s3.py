"""The S3 view with boto3 and the aws CLI against `onestack up`; Swift and S3 share objects."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import httpx
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from tests.acceptance.conftest import ADMIN_PASSWORD, BIN, Deployment, issue_token, unique
from tests.acceptance.test_object_cli import member_of_new_project


def ec2_credentials(cloud: Deployment, token: str) -> tuple[str, str]:
    """A new EC2 credential for the token's user and project, made over the identity API."""
    body = httpx.get(
        f"{cloud.auth_url}/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token}
    ).json()["token"]
    made = httpx.post(
        f"{cloud.auth_url}/users/{body['user']['id']}/credentials/OS-EC2",
        json={"tenant_id": body["project"]["id"]},
        headers={"X-Auth-Token": token},
    )
    assert made.status_code == 201, made.text
    credential = made.json()["credential"]
    return credential["access"], credential["secret"]


def endpoint(cloud: Deployment) -> str:
    return f"http://127.0.0.1:{cloud.extra_env['port']}/s3"


def client(cloud: Deployment, access: str, secret: str, **config: Any) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint(cloud),
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config),
    )


@pytest.fixture(scope="module")
def admin_keys(all_in_one: Deployment) -> tuple[str, str]:
    token = issue_token(all_in_one.auth_url, "admin", ADMIN_PASSWORD, "admin")
    return ec2_credentials(all_in_one, token.headers["x-subject-token"])


def test_boto3_bucket_multipart_list_download_presign_delete(
    all_in_one: Deployment, admin_keys: tuple[str, str]
) -> None:
    s3 = client(all_in_one, *admin_keys)
    bucket = unique("boto")
    s3.create_bucket(Bucket=bucket)
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    with pytest.raises(botocore.exceptions.ClientError) as again:
        s3.create_bucket(Bucket=bucket)
    assert again.value.response["Error"]["Code"] == "BucketAlreadyOwnedByYou"
    data = os.urandom(100 * 1024 * 1024)
    transfer = TransferConfig(
        multipart_threshold=8 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024
    )
    s3.upload_fileobj(
        io.BytesIO(data),
        bucket,
        "big/blob.bin",
        Config=transfer,
        ExtraArgs={"Metadata": {"origin": "boto3"}, "ContentType": "application/x-test"},
    )
    s3.put_object(Bucket=bucket, Key="small.txt", Body=b"small one")
    head = s3.head_object(Bucket=bucket, Key="big/blob.bin")
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-13"')
    assert head["Metadata"] == {"origin": "boto3"} and head["ContentType"] == "application/x-test"
    listed = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in listed["Contents"]] == ["small.txt"]
    assert [p["Prefix"] for p in listed["CommonPrefixes"]] == ["big/"]
    everything = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert {o["Key"]: o["Size"] for o in everything} == {"big/blob.bin": len(data), "small.txt": 9}
    assert everything[0]["ETag"] == head["ETag"]
    downloaded = io.BytesIO()
    s3.download_fileobj(bucket, "big/blob.bin", downloaded)
    assert hashlib.sha256(downloaded.getvalue()).digest() == hashlib.sha256(data).digest()
    ranged = s3.get_object(Bucket=bucket, Key="big/blob.bin", Range="bytes=9000000-9000099")
    assert ranged["Body"].read() == data[9000000:9000100]

    presigner = client(all_in_one, *admin_keys, signature_version="s3v4")
    url = presigner.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "small.txt"}, ExpiresIn=60
    )
    assert httpx.get(url).content == b"small one"
    legacy = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "small.txt"}, ExpiresIn=60
    )
    assert httpx.get(legacy).content == b"small one"
    upload_url = presigner.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "via-url"}, ExpiresIn=60
    )
    assert httpx.put(upload_url, content=b"put by url").status_code == 200
    assert s3.get_object(Bucket=bucket, Key="via-url")["Body"].read() == b"put by url"
    short = presigner.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "small.txt"}, ExpiresIn=1
    )
    time.sleep(2)
    expired = httpx.get(short)
    assert expired.status_code == 403 and b"<Code>AccessDenied</Code>" in expired.content
    tampered = httpx.get(url.replace("small.txt", "via-url"))
    assert tampered.status_code == 403 and b"SignatureDoesNotMatch" in tampered.content

    with pytest.raises(botocore.exceptions.ClientError) as missing:
        s3.get_object(Bucket=bucket, Key="nope")
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"
    with pytest.raises(botocore.exceptions.ClientError) as busy:
        s3.delete_bucket(Bucket=bucket)
    assert busy.value.response["Error"]["Code"] == "BucketNotEmpty"
    s3.delete_object(Bucket=bucket, Key="small.txt")
    deleted = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "big/blob.bin"}, {"Key": "via-url"}]}
    )
    assert sorted(d["Key"] for d in deleted["Deleted"]) == ["big/blob.bin", "via-url"]
    s3.delete_bucket(Bucket=bucket)
    with pytest.raises(botocore.exceptions.ClientError) as gone:
        s3.head_bucket(Bucket=bucket)
    assert gone.value.response["Error"]["Code"] == "404"


def test_multipart_parts_listing_and_abort(
    all_in_one: Deployment, admin_keys: tuple[str, str]
) -> None:
    s3 = client(all_in_one, *admin_keys)
    bucket = unique("parts")
    s3.create_bucket(Bucket=bucket)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=1, Body=b"x" * 10)
    parts = s3.list_parts(Bucket=bucket, Key="k", UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in parts] == [(1, 10, part["ETag"])]
    with pytest.raises(botocore.exceptions.ClientError) as wrong:
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key="k",
            UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"' + "0" * 32 + '"'}]},
        )
    assert wrong.value.response["Error"]["Code"] == "InvalidPart"
    listed = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in listed] == [("k", upload)]
    s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload)
    with pytest.raises(botocore.exceptions.ClientError) as aborted:
        s3.list_parts(Bucket=bucket, Key="k", UploadId=upload)
    assert aborted.value.response["Error"]["Code"] == "NoSuchUpload"
    # A multipart object made by copying ranges of another one.
    source = os.urandom(6 * 1024 * 1024)
    s3.put_object(Bucket=bucket, Key="src", Body=source)
    made = s3.create_multipart_upload(Bucket=bucket, Key="joined")["UploadId"]
    parts = []
    for number, span in ((1, "bytes=0-5242879"), (2, f"bytes=5242880-{len(source) - 1}")):
        copied = s3.upload_part_copy(
            Bucket=bucket,
            Key="joined",
            UploadId=made,
            PartNumber=number,
            CopySource={"Bucket": bucket, "Key": "src"},
            CopySourceRange=span,
        )
        parts.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
    s3.complete_multipart_upload(
        Bucket=bucket, Key="joined", UploadId=made, MultipartUpload={"Parts": parts}
    )
    assert s3.get_object(Bucket=bucket, Key="joined")["Body"].read() == source
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "src"}, {"Key": "joined"}]})
    s3.delete_bucket(Bucket=bucket)


def test_swift_and_s3_share_objects_and_projects_stay_apart(
    all_in_one: Deployment, admin_keys: tuple[str, str]
) -> None:
    cloud = all_in_one
    s3 = client(cloud, *admin_keys)
    token = issue_token(cloud.auth_url, "admin", ADMIN_PASSWORD, "admin").headers["x-subject-token"]
    project = httpx.get(
        f"{cloud.auth_url}/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token}
    ).json()["token"]["project"]["id"]
    swift_url = f"http://127.0.0.1:{cloud.extra_env['port']}/object/v1/AUTH_{project}"
    headers = {"X-Auth-Token": token}
    bucket = unique("shared")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="from-s3", Body=b"written with S3", Metadata={"who": "s3"})
    via_swift = httpx.get(f"{swift_url}/{bucket}/from-s3", headers=headers)
    assert via_swift.content == b"written with S3"
    assert via_swift.headers["x-object-meta-who"] == "s3"
    put = httpx.put(
        f"{swift_url}/{bucket}/from-swift",
        content=b"written with Swift",
        headers={**headers, "X-Object-Meta-Who": "swift"},
    )
    assert put.status_code == 201
    got = s3.get_object(Bucket=bucket, Key="from-swift")
    assert got["Body"].read() == b"written with Swift" and got["Metadata"] == {"who": "swift"}
    copied = s3.copy_object(
        Bucket=bucket, Key="copied", CopySource={"Bucket": bucket, "Key": "from-swift"}
    )
    assert copied["CopyObjectResult"]["ETag"] == got["ETag"]
    assert (
        httpx.get(f"{swift_url}/{bucket}?format=json", headers=headers).json()[0]["name"]
        == "copied"
    )

    _, other_token = member_of_new_project(cloud, unique("s3proj"), unique("s3user"))
    stranger = client(cloud, *ec2_credentials(cloud, other_token))
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        stranger.get_object(Bucket=bucket, Key="from-s3")
    # Buckets live in each project's own account, as with Swift's s3api: no way across.
    assert denied.value.response["Error"]["Code"] == "NoSuchBucket"
    assert bucket not in [b["Name"] for b in stranger.list_buckets()["Buckets"]]

    # Virtual-host style: the bucket is in the Host header.
    request = AWSRequest(
        "GET",
        f"http://{bucket}.s3.localhost:{cloud.extra_env['port']}/s3/from-s3",
        headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"},
    )
    SigV4Auth(Credentials(*admin_keys), "s3", "us-east-1").add_auth(request)
    virtual_host = f"{bucket}.s3.localhost:{cloud.extra_env['port']}"
    response = httpx.get(
        f"{endpoint(cloud)}/from-s3", headers={**request.headers, "host": virtual_host}
    )
    assert response.status_code == 200 and response.content == b"written with S3", response.text


def test_aws_cli(all_in_one: Deployment, admin_keys: tuple[str, str], tmp_path: Path) -> None:
    access, secret = admin_keys
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "AWS_ACCESS_KEY_ID": access,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
    }

    def aws(*args: str) -> str:
        done = subprocess.run(
            [str(BIN / "aws"), "--endpoint-url", endpoint(all_in_one), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    bucket = unique("cli")
    source = tmp_path / "f.txt"
    source.write_text("from the aws cli")
    aws("s3", "mb", f"s3://{bucket}")
    aws("s3", "cp", str(source), f"s3://{bucket}/dir/f.txt")
    assert "f.txt" in aws("s3", "ls", f"s3://{bucket}/dir/")
    aws("s3", "cp", f"s3://{bucket}/dir/f.txt", str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_text() == "from the aws cli"
    aws("s3", "rm", f"s3://{bucket}/dir/f.txt")
    aws("s3", "rb", f"s3://{bucket}")
    assert bucket not in aws("s3", "ls")
