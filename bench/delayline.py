#!/usr/bin/env python3
"""A long-haul link on one machine, without netem: two network namespaces, each with
a TUN device, and a carrier process that moves IP packets between the two devices
after a one-way delay (half the round trip), optionally at a capped rate through a
bounded queue.  The kernels' real TCP on both ends sees a real round trip.

    sudo python bench/delayline.py --rtt 50ms                 # its ceiling, then one TCP stream at 50 ms
    sudo python bench/delayline.py --rtt 50ms --streams 1 4   # and four streams

What it makes, and removes when it ends (also on an error or Ctrl-C): namespaces
``ddlhc<pid>`` (the client side) and ``ddlhs<pid>`` (the server side), TUN devices
``ddtc<pid>`` and ``ddts<pid>`` in them with private addresses 10.201.<n>.1 and .2
(point to point, inside those namespaces only), and the carrier process.  Nothing in
the machine's own namespace is touched.

Design: the TUN devices are made here, in the machine's namespace, and then moved into
their namespaces; their descriptors stay with this process, which hands them to each
carrier it starts (a new delay is a new carrier; the devices stay).  Both devices carry
virtio-net headers with checksum and segmentation offload on, so a read returns a whole
TCP segment train of up to 64 KiB, as the sending kernel built it, and the write on the
other device hands it to the receiving kernel as one: a carrier in Python moves a few
thousand of those a second, not the hundred thousand 1500-byte packets the same bytes
would be otherwise.  `Bridge` makes one port of the machine's loopback (the broker's)
reachable at the same address inside the client namespace.
"""
import argparse
import atexit
import collections
import ctypes
import fcntl
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TUN, IFF_NO_PI, IFF_VNET_HDR = 0x0001, 0x1000, 0x4000
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6 = 0x01, 0x02, 0x04
CLONE_NEWNET = 0x40000000
READ_SIZE = 65536 + 64        # a virtio-net header and the largest GSO packet
READS_PER_WAKE = 256          # packets read from one device before looking at the other
UNAVAILABLE = 77
CARRIER_PRIORITY = 10         # SCHED_FIFO, low among real-time ones


def parse_duration(text):
    """Seconds of '50ms', '0.05s', '0'."""
    text = text.strip().lower()
    for suffix, scale in (("ms", 1e-3), ("us", 1e-6), ("s", 1.0)):
        if text.endswith(suffix):
            return float(text[:-len(suffix)]) * scale
    return float(text)


def _run(*command):
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip() or result.returncode}")
    return result.stdout


def unavailable():
    """Why this machine cannot make the line, or None."""
    if os.geteuid() != 0:
        return "network namespaces and TUN devices need root"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun (modprobe tun)"
    probe = f"ddlhprobe{os.getpid()}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=30)
    if result.returncode:
        return f"cannot make a network namespace: {result.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=30)
    return None


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI | IFF_VNET_HDR))
        fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
    except BaseException:
        os.close(fd)
        raise
    return fd


class Line:
    """The two namespaces, their TUN devices and the carrier; `close` undoes all of it."""

    def __init__(self):
        pid = os.getpid()
        subnet = pid % 250 + 1
        self.client_ns, self.server_ns = f"ddlhc{pid}", f"ddlhs{pid}"
        self.client, self.server = f"10.201.{subnet}.1", f"10.201.{subnet}.2"
        self.devices = (f"ddtc{pid}", f"ddts{pid}")
        self._fds = []
        self._made = []
        self.carrier = None
        self.rtt = self.rate = 0.0
        atexit.register(self.close)

    def open(self):
        for namespace, device, mine, peer in ((self.client_ns, self.devices[0], self.client, self.server),
                                              (self.server_ns, self.devices[1], self.server, self.client)):
            _run("ip", "netns", "add", namespace)
            self._made.append(namespace)
            self._fds.append(open_tun(device))
            _run("ip", "link", "set", device, "netns", namespace)
            inside = ("ip", "netns", "exec", namespace)
            _run(*inside, "ip", "addr", "add", mine, "peer", peer, "dev", device)
            # The stock qdisc queue of 500 packets of up to 64 KiB each is plenty.
            _run(*inside, "ip", "link", "set", device, "up")
            _run(*inside, "ip", "link", "set", "lo", "up")
        return self

    def carry(self, rtt, rate=0.0, queue=0):
        """(Re)start the carrier: `rtt` seconds round trip, `rate` bytes/s (0: no cap) through
        a queue of `queue` bytes (0: a round trip's worth at `rate`)."""
        self.stop_carrier()
        self.rtt, self.rate = rtt, rate
        self.carrier = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--carry", *map(str, self._fds),
             "--delay", repr(rtt / 2), "--rate", repr(rate), "--queue", str(queue)],
            pass_fds=self._fds, start_new_session=True)
        time.sleep(0.2)
        if self.carrier.poll() is not None:
            raise RuntimeError(f"the delay line's carrier exited with status {self.carrier.returncode}")

    def stop_carrier(self):
        if self.carrier is not None:
            self.carrier.terminate()
            try:
                self.carrier.wait(10)
            except subprocess.TimeoutExpired:
                self.carrier.kill()
                self.carrier.wait()
            self.carrier = None

    def exec_prefix(self, side):
        """The command prefix that runs a program in the client or the server namespace."""
        return ["ip", "netns", "exec", self.client_ns if side == "client" else self.server_ns]

    def buffers(self, side="client"):
        """The namespace's TCP buffer sizes (tcp_wmem, tcp_rmem max) and congestion control."""
        values = {}
        for key in ("tcp_wmem", "tcp_rmem", "tcp_congestion_control"):
            values[key] = _run(*self.exec_prefix(side), "sysctl", "-n", f"net.ipv4.{key}").split()
        return values

    def close(self):
        self.stop_carrier()
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        while self._made:   # a namespace takes its devices with it
            subprocess.run(["ip", "netns", "del", self._made.pop()], capture_output=True, timeout=30)


def buffers_text(line):
    values = line.buffers()
    wmem, rmem = (int(values[k][2]) for k in ("tcp_wmem", "tcp_rmem"))
    return (f"tcp_wmem max {wmem / (1 << 20):g} MiB, tcp_rmem max {rmem / (1 << 20):g} MiB, "
            f"{values['tcp_congestion_control'][0]}")


class _Lane:
    """Packets from one device on their way to the other."""

    __slots__ = ("out", "queue", "departs", "pending", "dropped")

    def __init__(self, out):
        self.out = out
        self.queue = collections.deque()    # (due, packet)
        self.departs = 0.0                  # when the last packet leaves the rate cap
        self.pending = collections.deque()  # (departs, size): bytes still waiting for the cap
        self.dropped = 0


def carry(fds, delay, rate, queue_limit):
    """The carrier's loop: read packets from either device, write each to the other
    `delay` seconds later (after its turn at `rate` bytes/s, when capped)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _first_in_line()
    a, b = fds
    lanes = {a: _Lane(b), b: _Lane(a)}
    poller = select.epoll()
    for fd in fds:
        os.set_blocking(fd, False)
        poller.register(fd, select.EPOLLIN)
    if rate and not queue_limit:
        queue_limit = max(int(rate * max(2 * delay, 0.01)), 1 << 20)
    clock = time.monotonic
    while True:
        due = [lane.queue[0][0] for lane in lanes.values() if lane.queue]
        timeout = max(min(due) - clock(), 0.0) if due else -1
        for fd, _ in poller.poll(timeout):
            lane, now = lanes[fd], clock()
            for _ in range(READS_PER_WAKE):
                try:
                    packet = os.read(fd, READ_SIZE)
                except BlockingIOError:
                    break
                if rate:
                    pending = lane.pending
                    while pending and pending[0][0] <= now:
                        pending.popleft()
                    if sum(size for _, size in pending) + len(packet) > queue_limit:
                        lane.dropped += 1
                        continue
                    lane.departs = max(lane.departs, now) + len(packet) / rate
                    pending.append((lane.departs, len(packet)))
                    lane.queue.append((lane.departs + delay, packet))
                else:
                    lane.queue.append((now + delay, packet))
        now = clock()
        for lane in lanes.values():
            queue = lane.queue
            while queue and queue[0][0] <= now:
                try:
                    os.write(lane.out, queue[0][1])
                except BlockingIOError:
                    break
                except OSError:
                    pass    # a packet the other kernel refuses is lost, as on a wire
                queue.popleft()


def _first_in_line():
    """Run before ordinary processes: a link does not slow down when the machine is busy,
    and on a shared machine a starved carrier would add its waits to every round trip.
    It sleeps in epoll between packets, and the kernel keeps 5 % of each second for the
    rest anyway (sched_rt_runtime_us)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(CARRIER_PRIORITY))
    except OSError:
        try:
            os.nice(-10)
        except OSError:
            pass


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


class Bridge:
    """127.0.0.1:`port` of the machine's namespace, reachable at 127.0.0.1:`port` inside
    `namespace` too (the broker, for programs run there): each connection is relayed by
    two threads of this process."""

    def __init__(self, namespace, port):
        self.port = port
        own = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        theirs = os.open(f"/run/netns/{namespace}", os.O_RDONLY | os.O_CLOEXEC)
        made = {}

        def listen():   # setns moves this thread only, and its sockets stay where they were made
            try:
                _setns(theirs)
                made["socket"] = socket.create_server(("127.0.0.1", port))
            except OSError as error:
                made["error"] = error
        try:
            thread = threading.Thread(target=listen)
            thread.start()
            thread.join()
        finally:
            os.close(own)
            os.close(theirs)
        if "error" in made:
            raise made["error"]
        self.server = made["socket"]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                inside, _ = self.server.accept()
            except OSError:
                return
            try:
                outside = socket.create_connection(("127.0.0.1", self.port))
            except OSError:
                inside.close()
                continue
            for source, sink in ((inside, outside), (outside, inside)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def close(self):
        self.server.close()


def _pump(source, sink):
    try:
        while data := source.recv(1 << 16):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# -- measuring the line alone ----------------------------------------------------

SINK = r"""
import socket, sys, threading
def serve(connection):
    data = memoryview(b"\0" * (1 << 20))
    total = int(connection.recv(64).decode())
    while total > 0:
        total -= connection.send(data[:min(total, len(data))])
    connection.close()
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    threading.Thread(target=serve, args=(server.accept()[0],)).start()
"""


def stream_rate(line, streams, nbytes, port):
    """MB/s of `streams` TCP streams from the server side to the client side, `nbytes` in all."""
    code = (
        "import socket, sys, threading, time\n"
        "host, port, streams, each = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])\n"
        "def one():\n"
        "    s = socket.create_connection((host, port)); s.sendall(str(each).encode().ljust(64))\n"
        "    buf = bytearray(1 << 20)\n"
        "    while s.recv_into(buf): pass\n"
        "started = time.monotonic()\n"
        "threads = [threading.Thread(target=one) for _ in range(streams)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "print(time.monotonic() - started)\n")
    out = _run(*line.exec_prefix("client"), sys.executable, "-c", code, line.server, str(port), str(streams),
               str(nbytes // streams))
    return nbytes / float(out) / 1e6


def ceiling(line, nbytes, streams=1, port=5001):
    """MB/s of `streams` plain TCP streams over the line at 0 ms: what the carrier itself
    moves, with the programs at either end doing nothing else (the line is left at 0 ms)."""
    line.carry(0.0)
    sink = subprocess.Popen([*line.exec_prefix("server"), sys.executable, "-c", SINK, line.server, str(port)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        sink.stdout.readline()
        return stream_rate(line, streams, nbytes, port)
    finally:
        sink.terminate()
        sink.wait()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rtt", default="50ms", help="round trip (50ms)")
    parser.add_argument("--rate", type=float, default=0.0, help="rate cap, MB/s (0: none)")
    parser.add_argument("--size", type=int, default=256, help="MiB moved per measure (256)")
    parser.add_argument("--streams", type=int, nargs="+", default=[1], help="stream counts (1)")
    parser.add_argument("--carry", type=int, nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--delay", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--queue", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.carry:
        carry(args.carry, args.delay, args.rate, args.queue)
        return 0
    reason = unavailable()
    if reason:
        print(f"delayline: {reason}; not run", file=sys.stderr)
        return UNAVAILABLE
    line = Line()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        line.open()
        port = 5001
        nbytes = args.size << 20
        top = ceiling(line, nbytes, port=port)
        print(f"buffers: {buffers_text(line)}")
        print(f"ceiling (0 ms, 1 stream): {top:.0f} MB/s")
        line.carry(parse_duration(args.rtt), args.rate * 1e6)
        sink = subprocess.Popen([*line.exec_prefix("server"), sys.executable, "-c", SINK, line.server, str(port)],
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            sink.stdout.readline()
            for streams in args.streams:
                rate = stream_rate(line, streams, nbytes, port)
                print(f"rtt {args.rtt}, {streams} stream(s): {rate:.0f} MB/s (ceiling {top:.0f} MB/s)")
        finally:
            sink.terminate()
            sink.wait()
    finally:
        line.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
