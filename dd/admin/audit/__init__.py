"""dd_audit: a pump's users, permissions and exchanges on RabbitMQ, from admin.conf.

One module per verb (declare, status, cleanup), each with its parser beside it;
`main` loads the configuration and connects to the management API for them.
"""
