"""Team mode's servers: a local stack for trying and testing, and the bootstrap for any stack.

`team.stack` brings a complete stack up on 127.0.0.1 under one folder; `team.bootstrap` creates the users,
permissions, registered models, the work pool and the promotion mutex on any stack, local or real.
"""
