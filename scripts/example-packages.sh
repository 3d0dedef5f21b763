#!/usr/bin/env bash
# Make two tiny real packages standing in for Falco's release artifacts (dpkg-deb, rpmbuild), so the
# demo publishes an APT and an RPM repository beside the drivers.  Usage: example-packages.sh OUTDIR
set -euo pipefail
out=$(realpath -m "$1")
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
version=0.1.0

deb="$out/falco-demo_${version}_amd64.deb"
if [ ! -f "$deb" ]; then
    mkdir -p "$work/deb/DEBIAN" "$work/deb/usr/share/falco-demo"
    echo "repogen demo package" >"$work/deb/usr/share/falco-demo/README"
    cat >"$work/deb/DEBIAN/control" <<CONTROL
Package: falco-demo
Version: $version
Architecture: amd64
Maintainer: repogen demo <demo@repogen.invalid>
Description: stand-in for a Falco release package
 Published by repogen's demo.
CONTROL
    dpkg-deb --root-owner-group --build "$work/deb" "$deb" >/dev/null
fi

rpm_file="$out/falco-demo-${version}-1.x86_64.rpm"
if [ ! -f "$rpm_file" ]; then
    mkdir -p "$work/rpm/SPECS"
    cat >"$work/rpm/SPECS/falco-demo.spec" <<SPEC
Name: falco-demo
Version: $version
Release: 1
Summary: stand-in for a Falco release package
License: Apache-2.0
BuildArch: x86_64
%description
Published by repogen's demo.
%install
mkdir -p %{buildroot}/usr/share/falco-demo
echo "repogen demo package" > %{buildroot}/usr/share/falco-demo/README
%files
/usr/share/falco-demo/README
SPEC
    rpmbuild --quiet --define "_topdir $work/rpm" --define "_build_id_links none" \
        -bb "$work/rpm/SPECS/falco-demo.spec" >/dev/null 2>&1
    cp "$work"/rpm/RPMS/x86_64/*.rpm "$rpm_file"
fi
echo "$deb"
echo "$rpm_file"
