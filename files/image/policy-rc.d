#!/bin/sh
# Installed only while the image is built: packages must not start services in the chroot.
exit 101
