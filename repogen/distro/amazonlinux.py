"""Amazon Linux: RPM packaging; falcoctl (``amzn.go``) names the target by os-release VERSION_ID."""

from __future__ import annotations

from typing import ClassVar

from repogen.distro import Uname
from repogen.distro.rhel import RpmDistro


class AmazonLinux(RpmDistro, name="amazonlinux"):
    targets = ("amazonlinux",)
    os_ids: ClassVar[tuple[str, ...]] = ("amzn",)
    by_version_id: ClassVar[dict[str, str]] = {"2": "amazonlinux2", "2022": "amazonlinux2022",
                                               "2023": "amazonlinux2023"}

    @classmethod
    def target_for(cls, uname: Uname) -> str:
        return cls.by_version_id.get(uname.version_id, "amazonlinux")


class AmazonLinux2(AmazonLinux, name="amazonlinux2"):
    targets = ("amazonlinux2",)
    os_ids = ()
    mirror = "amazonlinux2"
    repositories = ("{arch}/mirror.list",)


class AmazonLinux2022(AmazonLinux, name="amazonlinux2022"):
    targets = ("amazonlinux2022",)
    os_ids = ()


class AmazonLinux2023(AmazonLinux, name="amazonlinux2023"):
    targets = ("amazonlinux2023",)
    os_ids = ()
    mirror = "amazonlinux2023"
    repositories = ("{arch}/mirror.list",)
