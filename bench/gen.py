#!/usr/bin/env python3
"""Generates a benchmark volume: COUNT files of about SIZE bytes each (0.5x to 1.5x).
KIND `yaml`: commissioning-file-like text with varying names, hosts and values (what a
service-manager volume mostly holds). KIND `half`: half random bytes (does not compress), half
repeated text. Usage: gen.py DIR COUNT SIZE KIND"""
import os
import random
import sys

root, count, size, kind = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rng = random.Random(42)
words = ["opcua", "mqtt", "modbus", "s7", "mapping", "endpoint", "connection", "sensor",
         "temperature", "pressure", "line", "press", "robot", "plc", "gateway", "topic"]
text = (b"resources:\n  opcuaConnection:\n    type: Cybus::Connection\n    properties:\n"
        b"      protocol: Opcua\n      host: 192.0.2.10\n      port: 4840\n") * 64


def yaml(n):
    out = []
    total = 0
    while total < n:
        w = rng.choice(words)
        line = ("  %s%d:\n    type: Cybus::%s\n    properties:\n      host: 10.%d.%d.%d\n"
                "      port: %d\n      topic: plant/%s/%s/%d\n      interval: %d\n" % (
                    w, rng.randrange(10000), rng.choice(["Endpoint", "Connection", "Mapping"]),
                    rng.randrange(256), rng.randrange(256), rng.randrange(256), rng.randrange(1, 65536),
                    rng.choice(words), rng.choice(words), rng.randrange(1000), rng.randrange(100, 60000)))
        out.append(line.encode())
        total += len(line)
    return b"description: generated\nresources:\n" + b"".join(out)[:n]


for i in range(count):
    d = os.path.join(root, "services", "d%03d" % (i % 200))
    os.makedirs(d, exist_ok=True)
    n = max(1, int(size * rng.uniform(0.5, 1.5)))
    if kind == "yaml":
        body = yaml(n)
    else:
        half = n // 2
        body = os.urandom(half) + (text * (half // len(text) + 1))[: n - half]
    with open(os.path.join(d, "f%05d.yml" % i), "wb") as f:
        f.write(body)
