#!/usr/bin/env bash
# Make two tiny real packages standing in for Falco's release artifacts (dpkg-deb, rpmbuild), so the
# demo publishes an APT and an RPM repository beside the drivers.
# Usage: example-packages.sh OUTDIR [GNUPGHOME]   (with GNUPGHOME, the .rpm is signed with its key, as
# Falco's release pipeline signs its packages: dnf's gpgcheck=1 wants signed packages)
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
    built=$(ls "$work"/rpm/RPMS/x86_64/*.rpm)
    if [ -n "${2:-}" ]; then
        fpr=$(gpg --batch --homedir "$2" --with-colons --list-secret-keys 2>/dev/null | awk -F: '/^fpr/ {print $10; exit}')
        rpmsign --addsign --define "__gpg /usr/bin/gpg" --define "_gpg_name $fpr" --define "_gpg_path $2" \
            --define "_gpg_sign_cmd_extra_args --batch --pinentry-mode loopback" "$built" >/dev/null 2>&1 </dev/null
    fi
    cp "$built" "$rpm_file"
fi
echo "$deb"
echo "$rpm_file"
