"""``onestack guest-image build``: the small bootable guest image, from Debian packages."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def add_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the ``guest-image`` command group."""
    parser = sub.add_parser("guest-image", help="the small guest image for real guests")
    image_sub = parser.add_subparsers(dest="guest_image_command", required=True)
    build = image_sub.add_parser("build", help="build the guest image (qcow2, ~13 MiB)")
    common(build)
    build.add_argument("--output", type=Path, help="where to write it (default: the data dir)")
    build.add_argument("--force", action="store_true", help="rebuild even when cached")


def run(args: argparse.Namespace, settings: Any) -> int:
    """Build the guest image (cached in the data dir unless ``--output`` says elsewhere)."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from onestack.compute.guest_image import GuestImageError, build, default_path

    console = Console(stderr=True)
    cached = default_path(settings.data_dir)
    output = args.output or cached
    if output == cached and cached.exists() and not args.force:
        print(output)
        return 0
    started = time.monotonic()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("guest image", total=None)
        try:
            build(output, lambda text: progress.update(task, description=text))
        except GuestImageError as exc:
            console.print(f"[red]onestack guest-image: {exc}")
            return 1
    size = output.stat().st_size / (1 << 20)
    console.print(f"built {output} ({size:.1f} MiB) in {time.monotonic() - started:.1f} s")
    print(output)
    return 0
