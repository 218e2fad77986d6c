"""limit/marker paging over a real table, with sorting and next links."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Integer, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from starlette.requests import Request

from onestack.core.asgi.errors import BadRequest, NotFound
from onestack.core.asgi.paging import paginate, read_limit
from onestack.core.config import async_url
from onestack.core.db import Database


class Base(DeclarativeBase):
    pass


class Thing(Base):
    __tablename__ = "thing"
    id: Mapped[str] = mapped_column(String(8), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)


def request(query: str) -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "scheme": "http",
            "server": ("api.test", 80),
            "path": "/things",
            "root_path": "",
            "query_string": query.encode(),
            "headers": [(b"host", b"api.test")],
        }
    )


async def test_pages_cover_every_row_once_in_order(tmp_path: Path) -> None:
    db = Database(async_url(f"sqlite:///{tmp_path}/p.db"))
    async with db.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with db.session() as session:
        session.add_all(Thing(id=f"t{i:02d}", size=i % 3) for i in range(10))
    seen: list[str] = []
    marker = None
    async with db.session() as session:
        while True:
            page = await paginate(
                session, select(Thing), Thing, limit=3, marker=marker, sort=[("size", "desc")]
            )
            seen += [row.id for row in page.rows]
            link = page.next_link(request("limit=3&sort_key=size"))
            if link is None:
                break
            assert "marker=" in link and link.startswith("http://api.test/things?")
            marker = page.rows[-1].id
        with pytest.raises(NotFound):
            await paginate(session, select(Thing), Thing, limit=1, marker="nope", sort=[])
        with pytest.raises(BadRequest):
            await paginate(session, select(Thing), Thing, limit=1, marker=None, sort=[("x", "asc")])
    expected = sorted((f"t{i:02d}" for i in range(10)), key=lambda t: (-(int(t[1:]) % 3), t))
    assert seen == expected
    await db.close()


def test_limit_parsing() -> None:
    assert read_limit(request("limit=5")) == 5
    assert read_limit(request("limit=5000"), maximum=1000) == 1000
    assert read_limit(request("")) is None
    with pytest.raises(BadRequest):
        read_limit(request("limit=-1"))
