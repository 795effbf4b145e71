"""`python -m bench.io`: the I/O-bound benchmark of issue 12.

N jobs that each `await asyncio.sleep(0.05)`, one worker process, 100 in
flight: the floor (`asyncio.gather` under `asyncio.Semaphore(100)` in one
process), our worker (`craft queue:work --async-concurrency 100`) on amqp and
on PostgreSQL, and the peers at the same concurrency (procrastinate,
Dramatiq with its AsyncIO middleware, arq). Every system runs the same body,
`bench.io.work.sleep_job`; see `bench.io.__main__` for how a round is timed.
"""
