"""dd_ctl: every configuration of every daemon component, run and watched as one service.

One module per verb, each with its argparse sub-parser beside it (``add_parser``)
and its ``run(args, env) -> exit status``; ``selection`` finds the configurations
the verbs apply to, and ``survey`` gathers what ``status`` and ``check`` report.
"""
