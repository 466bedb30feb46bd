#!/bin/sh
exec python3 "$(dirname "$0")/bench/bench.py" "$@"
