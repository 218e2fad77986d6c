"""Building S3's XML answers (ElementTree) and reading clients' XML safely (defusedxml)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from xml.etree import ElementTree

from defusedxml import ElementTree as SafeTree
from starlette.responses import Response

from onestack.object.s3.errors import XML_DECLARATION, S3Error

NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"


def element(tag: str, children: list[Any] | None = None, **attrs: str) -> ElementTree.Element:
    """A tree from ``(tag, text)`` pairs and nested ``(tag, [children])`` lists."""
    node = ElementTree.Element(tag, attrs)
    for child in children or []:
        if isinstance(child, ElementTree.Element):
            node.append(child)
            continue
        name, value = child
        if isinstance(value, list):
            node.append(element(name, value))
        else:
            ElementTree.SubElement(node, name).text = "" if value is None else str(value)
    return node


def document(tag: str, children: list[Any], status: int = 200) -> Response:
    root = element(tag, children, xmlns=NAMESPACE)
    body = XML_DECLARATION + ElementTree.tostring(root)
    return Response(body, status, media_type="application/xml")


def parse(raw: bytes) -> ElementTree.Element:
    """A client's XML document; MalformedXML when it is not one (or is hostile)."""
    try:
        root: ElementTree.Element = SafeTree.fromstring(raw)
    except Exception:
        raise S3Error("MalformedXML") from None
    return root


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def children(node: ElementTree.Element, name: str) -> list[ElementTree.Element]:
    return [c for c in node if local(c.tag) == name]


def text(node: ElementTree.Element, name: str) -> str | None:
    found = children(node, name)
    return found[0].text if found else None


def iso8601(timestamp: float) -> str:
    moment = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
