"""A real FTP server for the transfer tests (pyftpdlib), run as a process of its own:

    python ftpserver.py ROOT USER PASSWORD PLAIN_PORT TLS_PORT IDLE_PORT CERT KEY

serves ROOT to USER on 127.0.0.1: plain FTP on PLAIN_PORT, FTPS only (AUTH TLS and PROT P
required) on TLS_PORT, and on IDLE_PORT plain FTP that drops connections idle for a second.
Passive data connections go to ports the kernel picks, on 127.0.0.1 too.
"""
import logging
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
from pyftpdlib.servers import FTPServer


def main(root, user, password, plain_port, tls_port, idle_port, cert, key):
    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, root, perm="elradfmwMT")

    class Plain(FTPHandler):
        pass

    class Tls(TLS_FTPHandler):
        certfile, keyfile = cert, key
        tls_control_required = tls_data_required = True

    class Idle(FTPHandler):
        timeout = 1

    for handler, port in ((Plain, plain_port), (Tls, tls_port), (Idle, idle_port)):
        handler.authorizer = authorizer
        handler.auth_failed_timeout = 0   # a refused login is answered at once
        handler.unicode_errors = "surrogateescape"    # names sent as their bytes, as most servers do
        # All servers share one event loop, which the last one runs.
        server = FTPServer(("127.0.0.1", int(port)), handler)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    server.serve_forever()


if __name__ == "__main__":
    main(*sys.argv[1:])
