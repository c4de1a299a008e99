"""The commands that are not flows: the daemon actions and background instances,
dd_ctl (ctl/), dd_audit (audit/) and dd_log; logging set-up for all of them."""
