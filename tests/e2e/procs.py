"""Helpers shared by the end-to-end scripts: a free loopback port, and stopping a process
started here (by its PID: terminate, then kill after 10 s)."""
import socket
import subprocess


_GIVEN = set()


def free_port():
    """A loopback port that was free a moment ago and has not been given out before in this
    run (the kernel may hand a just-closed port out again, and two servers on one port would
    make one of them answer for the other)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def stop(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
