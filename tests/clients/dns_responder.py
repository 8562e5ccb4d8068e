#!/usr/bin/env python3
"""A tiny DNS responder on 127.0.0.1 for the tests: A and AAAA for the
names below, NXDOMAIN for others, and silence for slow.test.
Every question it gets is appended to LOG, one line each.
usage: dns_responder.py PORT LOG"""
import socket
import struct
import sys

RECORDS = {"svc.test": ("127.0.0.1", "::1"), "v4only.test": ("127.0.0.2", None)}


def answer(query):
    qid, _flags = struct.unpack(">HH", query[:4])
    i, labels = 12, []
    while query[i]:
        labels.append(query[i + 1:i + 1 + query[i]].decode().lower())
        i += 1 + query[i]
    qtype, _qclass = struct.unpack(">HH", query[i + 1:i + 5])
    question, name = query[12:i + 5], ".".join(labels)
    if name == "slow.test":
        return name, qtype, None
    addrs = RECORDS.get(name)
    if addrs is None:
        return name, qtype, struct.pack(">HHHHHH", qid, 0x8183, 1, 0, 0, 0) + question
    rdata = None
    if qtype == 1 and addrs[0]:
        rdata = socket.inet_pton(socket.AF_INET, addrs[0])
    elif qtype == 28 and addrs[1]:
        rdata = socket.inet_pton(socket.AF_INET6, addrs[1])
    head = struct.pack(">HHHHHH", qid, 0x8180, 1, 1 if rdata else 0, 0, 0)
    if not rdata:
        return name, qtype, head + question
    rr = struct.pack(">HHHIH", 0xC00C, qtype, 1, 60, len(rdata)) + rdata
    return name, qtype, head + question + rr


def main():
    port, log = int(sys.argv[1]), sys.argv[2]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    open(log, "w").close()  # the log's existence says the port is bound
    while True:
        data, peer = sock.recvfrom(512)
        try:
            name, qtype, reply = answer(data)
        except (IndexError, struct.error, UnicodeDecodeError):
            continue
        with open(log, "a") as f:
            f.write(f"{name} {qtype}\n")
        if reply:
            sock.sendto(reply, peer)


main()
