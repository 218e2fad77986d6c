"""Running the host's networking tools (ip, nft, dnsmasq) without blocking the event loop."""

from __future__ import annotations

import asyncio
import json
import tempfile
from typing import Any


class CommandError(RuntimeError):
    """A tool exited non-zero; carries its command line and what it printed."""

    def __init__(self, argv: tuple[str, ...], code: int, output: str):
        super().__init__(f"{' '.join(argv)} exited {code}: {output.strip()}")
        self.argv = argv
        self.code = code
        self.output = output


async def run(*argv: str, stdin: str | None = None, check: bool = True) -> str:
    """Run ``argv``; its stdout, or :class:`CommandError` when it fails and ``check``."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(stdin.encode() if stdin is not None else None)
    if check and process.returncode != 0:
        raise CommandError(argv, process.returncode or 0, (err or out).decode(errors="replace"))
    return out.decode(errors="replace")


async def start_daemon(netns: str, *argv: str) -> None:
    """Start ``argv`` (a program that forks into the background) inside ``netns``.

    Its output goes to a file and only the starting process's exit is awaited: the forked
    daemon may keep pipes open (it does under uvloop), so reading them to the end would wait
    for the daemon to stop.
    """
    command = ("ip", "netns", "exec", netns, *argv)
    with tempfile.TemporaryFile() as output:
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.DEVNULL, stdout=output, stderr=output
        )
        code = await process.wait()
        if code != 0:
            output.seek(0)
            raise CommandError(command, code, output.read().decode(errors="replace")[-2000:])


async def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    """``ip ARGS``, inside ``netns`` when given."""
    prefix = ("ip", "-n", netns) if netns else ("ip",)
    return await run(*prefix, *args, check=check)


async def ip_json(*args: str, netns: str | None = None) -> list[dict[str, Any]]:
    """``ip -json ARGS`` parsed (an empty list when ip prints nothing)."""
    prefix = ("ip", "-n", netns, "-json") if netns else ("ip", "-json")
    text = await run(*prefix, *args)
    parsed: list[dict[str, Any]] = json.loads(text) if text.strip() else []
    return parsed


async def in_netns(netns: str, *argv: str, check: bool = True) -> str:
    """Run ``argv`` inside the network namespace ``netns``."""
    return await run("ip", "netns", "exec", netns, *argv, check=check)


async def ipv6_defaults(netns: str, **values: int) -> None:
    """Set ``net.ipv6.conf.{all,default}.<name>`` inside ``netns``.

    Devices created in or moved into the namespace afterwards take these values.
    """
    settings = [
        f"net.ipv6.conf.{scope}.{name}={value}"
        for name, value in values.items()
        for scope in ("all", "default")
    ]
    await in_netns(netns, "sysctl", "-q", "-w", *settings)


async def nft(ruleset: str, netns: str | None = None) -> None:
    """Load a ruleset with ``nft -f -`` (atomically: all of it or nothing)."""
    if netns:
        await run("ip", "netns", "exec", netns, "nft", "-f", "-", stdin=ruleset)
    else:
        await run("nft", "-f", "-", stdin=ruleset)


async def namespaces() -> set[str]:
    """The names of the host's named network namespaces."""
    return {entry["name"] for entry in await ip_json("netns", "list")}


async def links(netns: str | None = None) -> list[dict[str, Any]]:
    """Every link with its details (``master``, ``linkinfo``)."""
    return await ip_json("-details", "link", "show", netns=netns)


async def delete_link(name: str, netns: str | None = None) -> None:
    """Remove a link; a link already gone is fine."""
    await ip("link", "del", name, netns=netns, check=False)


async def ensure_netns(name: str) -> None:
    """Create a network namespace with its loopback up (idempotent)."""
    if name not in await namespaces():
        await ip("netns", "add", name)
    await ip("link", "set", "lo", "up", netns=name)


async def delete_netns(name: str) -> None:
    """Remove a network namespace: its processes first, then its links, then itself."""
    if name not in await namespaces():
        return
    pids = (await run("ip", "netns", "pids", name, check=False)).split()
    for pid in pids:
        await run("kill", pid, check=False)
    for link in await links(netns=name):
        if link["ifname"] != "lo":
            await delete_link(link["ifname"], netns=name)
    await ip("netns", "del", name, check=False)
