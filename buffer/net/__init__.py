"""The replay over ZeroMQ: the request protocol, the ROUTER server, multipart I/O, the DEALER base, the insert and sample clients, and clients over many shards."""
