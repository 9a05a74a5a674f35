#!/bin/sh
# Prints the greeting written at build time and what the image is.
cat /etc/greeting
. /etc/os-release && echo "$PRETTY_NAME"
