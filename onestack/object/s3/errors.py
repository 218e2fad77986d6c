"""S3's error documents: ``<Error><Code>…</Code><Message>…</Message>…</Error>``."""

from __future__ import annotations

from xml.etree import ElementTree

from starlette.responses import Response

from onestack.core.asgi.errors import APIError

XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'

MESSAGES = {
    "AccessDenied": (403, "Access Denied."),
    "BadDigest": (400, "The Content-MD5 you specified did not match what was received."),
    "BucketAlreadyOwnedByYou": (
        409,
        "Your previous request to create the named bucket succeeded and you already own it.",
    ),
    "BucketNotEmpty": (409, "The bucket you tried to delete is not empty"),
    "EntityTooLarge": (400, "Your proposed upload exceeds the maximum allowed object size."),
    "EntityTooSmall": (
        400,
        "Your proposed upload is smaller than the minimum allowed object size.",
    ),
    "IncompleteBody": (
        400,
        "You did not provide the number of bytes specified by the Content-Length HTTP header.",
    ),
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "InvalidAccessKeyId": (
        403,
        "The AWS access key Id you provided does not exist in our records.",
    ),
    "InvalidArgument": (400, "Invalid Argument."),
    "InvalidBucketName": (400, "The specified bucket is not valid."),
    "InvalidDigest": (400, "The Content-MD5 you specified is not valid."),
    "InvalidLocationConstraint": (400, "The specified location constraint is not valid."),
    "InvalidPart": (
        400,
        "One or more of the specified parts could not be found. The part "
        "might not have been uploaded, or the specified entity tag might not "
        "have matched the part's entity tag.",
    ),
    "InvalidPartOrder": (
        400,
        "The list of parts was not in ascending order. Parts must be ordered by part number.",
    ),
    "InvalidRange": (416, "The requested range cannot be satisfied."),
    "InvalidRequest": (400, "Invalid Request."),
    "MalformedXML": (
        400,
        "The XML you provided was not well-formed or did not validate "
        "against our published schema.",
    ),
    "MethodNotAllowed": (405, "The specified method is not allowed against this resource."),
    "MissingContentLength": (411, "You must provide the Content-Length HTTP header."),
    "NoSuchBucket": (404, "The specified bucket does not exist."),
    "NoSuchKey": (404, "The specified key does not exist."),
    "NoSuchUpload": (
        404,
        "The specified multipart upload does not exist. The upload ID might "
        "be invalid, or the multipart upload might have been aborted or "
        "completed.",
    ),
    "NotImplemented": (501, "A header you provided implies functionality that is not implemented."),
    "PreconditionFailed": (412, "At least one of the preconditions you specified did not hold."),
    "RequestTimeTooSkewed": (
        403,
        "The difference between the request time and the current time is too large.",
    ),
    "ServiceUnavailable": (503, "Please reduce your request rate."),
    "SignatureDoesNotMatch": (
        403,
        "The request signature we calculated does not match the "
        "signature you provided. Check your key and signing method.",
    ),
    "XAmzContentSHA256Mismatch": (
        400,
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
    ),
}


class S3Error(APIError):
    """An S3 error by its code; extra fields (Key, BucketName, …) go into the document."""

    def __init__(self, code: str, message: str | None = None, **fields: str):
        status, default = MESSAGES.get(code, (400, code))
        super().__init__(message or default, status=status)
        self.code = code
        self.fields = fields


def s3_error(err: APIError, request_id: str = "") -> Response:
    """Render any API error as S3 does (the formatter of the S3 view)."""
    if not isinstance(err, S3Error):
        code = {
            401: "AccessDenied",
            403: "AccessDenied",
            404: "NoSuchKey",
            405: "MethodNotAllowed",
            411: "MissingContentLength",
            412: "PreconditionFailed",
            413: "EntityTooLarge",
            416: "InvalidRange",
            503: "ServiceUnavailable",
        }.get(err.status, "InternalError" if err.status >= 500 else "InvalidRequest")
        err = S3Error(code)
    root = ElementTree.Element("Error")
    ElementTree.SubElement(root, "Code").text = err.code
    ElementTree.SubElement(root, "Message").text = err.message
    for key, value in err.fields.items():
        ElementTree.SubElement(root, key).text = value
    request_id = request_id or str(err.extra.get("request_id") or "")
    ElementTree.SubElement(root, "RequestId").text = request_id
    body = XML_DECLARATION + ElementTree.tostring(root)
    return Response(body, err.status, media_type="application/xml")
