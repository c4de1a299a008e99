"""What a pump runs beside the flows: its data server (nginx, TLS, private readers), each
source's namespace in its tree, what makes a delivery a relay, and retention."""
