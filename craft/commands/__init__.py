"""Every craft command, in the order `craft --help` lists them."""

from craft.commands.generate import make_job, make_key

REGISTERED = [make_job, make_key]
