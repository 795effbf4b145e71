"""The `amqp` driver: jobs as persistent messages on RabbitMQ, through pika.

These notes are the driver's design, stated once; each module opens with why
it exists, and the constants named here live where they are used.

The parts:

- `settings`: connection settings to pika's parameters; `DEFAULT_PREFETCH`.
- `errors`: `AmqpUnavailableError`, `PublishRefusedError`, pika's errors sorted.
- `messages`: the message layout, envelope to properties and headers and back.
- `publisher`: confirm-mode publishing, the batch window, resends.
- `consumer`: the consumer thread; `calls` hands it work, `deliveries` are
  what it reads and what a worker holds, `acknowledgements` settles runs of
  tags, `prefetch` decides how many messages it takes.
- `suspects`: redelivered messages, run alone.
- `delays`: holding queues.
- `driver`: `AmqpDriver`, which composes them behind the `Driver` protocol.

Pushing. Each thread that pushes owns one `BlockingConnection` (pika's
connections are not thread-safe), opened on its first push and reused for
every push after it. Queues are durable and declared by whoever uses them
first, pusher or worker; messages are persistent (`delivery_mode=2`) and
published with `mandatory=True` on a channel in confirm mode, so `push()`
returns only once the broker has confirmed every message, and an unroutable
or nacked message raises `PublishRefusedError`. One job waits for its own
confirm; `push(*jobs)` publishes its messages back to back, up to
`CONFIRM_WINDOW` (256) awaiting their confirms at once, and returns when the
last is confirmed, so a batch costs about one round trip per window, not one
per job. A lost connection is reopened and the unconfirmed messages published
again, `publish_attempts` (3) times in all; then `AmqpUnavailableError` says
which broker and why. A message whose confirm was lost with the connection is
sent again, so a job may be queued twice, never lost: delivery is at least
once.

Message layout. The body is the envelope's signed body, untouched (the HMAC
that `queueing.payload` puts in front of the pickle is the signature); the
metadata the worker needs without unpickling travels in properties
(`message_id` is the job id, `type` the job name, `timestamp`) and headers
(`job-attempts`, `job-created`, `job-available-at-ms`, `job-signature`, a
copy of the body's HMAC for operators: the worker checks the one inside the
body; `job-name` when the name is too long for `type`; and
`job-unconfirmed-death` on a suspect, below). The queue is the one the
message is consumed from, or whose suspects queue it is.

Working. A worker's deliveries come from a consumer connection driven by a
background thread, which only moves frames: it keeps heartbeats flowing and
puts deliveries on a local buffer that `reserve()` takes from, while the job
itself runs in the worker's thread. Acknowledgements go back to the consumer
thread with `add_callback_threadsafe`, and only after the job settled: done,
failed and stored, or parked. QoS `prefetch` (`DEFAULT_PREFETCH`, 100) bounds
how many unacknowledged messages a worker holds per queue, so a worker killed
mid-job leaves its messages to be delivered again. Acknowledgements queued
together go out as one `multiple` acknowledgement when they settle a run of
delivery tags. With a prefetch above 1, a job running longer than
`LONG_JOB_SECONDS` (1 s) has the messages prefetched behind it given back
(`extend`): the consumer is cancelled while it runs, takes one message at a
time after it, and the full prefetch again once a job ends without running
long, so other workers run the given-back messages meanwhile. A worker that
stops gives back the prefetched messages it did not start
(`release_unstarted`). Giving back publishes a copy, attempts as they were,
and acknowledges the original once the copy is confirmed.

Attempts. `job-attempts` counts the attempts started before the message was
published; `reserve()` adds the one about to run. A message that comes back
`redelivered` had a delivery end unacknowledged: its worker died with it in
hand, or it only sat in a prefetch buffer (its own or pika's) when the
connection closed; the flag cannot tell which. So such a message is never
run from its queue: it is published to `<queue>.suspects` with its attempts
as they were and `job-unconfirmed-death`, then acknowledged. A worker runs
suspects alone: with a suspect waiting (it looks on connecting and every
`SUSPECT_CHECK_SECONDS`, 2 s), it cancels its consumers, gives back what it
had prefetched, takes one suspect with `basic_get` and holds nothing else
while it runs, until `basic_get` finds none. A suspect redelivered is
therefore a certain death: it is published again with that attempt counted,
and its unconfirmed death counted too (a job that kills its worker alone is
taken to have killed the one before), then acknowledged. So a prefetched job
loses no attempt, and a job that kills every worker is seen dead by the
runner after `run_times` deaths when it has two attempts or more; with one
(a plain function), it dies twice: once with its neighbours, once alone. A
suspect whose run ends with an outcome (done, retry, failed) is settled as
any job; a retry goes back to its queue.

Delays (`wait=` and retry delays) never block a queue: a message due later
goes to a holding queue `<queue>.delay.<ms>` whose messages all live `<ms>`
milliseconds (`x-message-ttl`) and are then dead-lettered into `<queue>`.
Every message of one holding queue has the same lifetime, so none waits
behind a longer one. Delays are rounded up by at most about 1%
(`holding_delay`) to keep the number of holding queues small without ever
running a job before it is due, and an idle holding queue deletes itself
`HOLDING_QUEUE_SLACK_MS` (a minute) after its last message is due
(`x-expires`). A retry publishes the same signed body (the job's state
included) to its holding queue with the attempts in the headers, and
acknowledges the original only once the broker confirmed the copy.

RabbitMQ's `consumer_timeout` (30 minutes by default) closes the channel of a
consumer that holds a message unacknowledged for longer. A job running past
it loses its delivery: the broker requeues the message, the consumer thread
reconnects, the job's acknowledgement is dropped (the worker logs that its
lease was lost) and the job runs again. Set `consumer_timeout` in
rabbitmq.conf above your longest job (in milliseconds), or keep jobs shorter
with `craft queue:work --timeout`.

Broker restarts. The consumer thread reconnects with a backoff of up to
`RECONNECT_MAX_SECONDS` (5 s); meanwhile `reserve()` raises
`AmqpUnavailableError`, which the worker reports before it waits and tries
again. Deliveries of the lost connection are dropped from the buffer (the
broker delivers them again), and acknowledging one returns False, as a lost
database lease does.

Counting. AMQP can ask a queue for its ready messages, but cannot list queues
nor count unacknowledged messages, so `counts()` reports `pending` (ready
messages of the channel's queue and of its suspects queue), `reserved` 0,
and `delayed` only for the holding queues this process has used: 0 from a
fresh `craft queue:status`. RabbitMQ's management UI or `rabbitmqctl
list_queues name messages_ready messages_unacknowledged` show the rest.
"""

from queueing.drivers.amqp.delays import holding_delay, holding_queue_name
from queueing.drivers.amqp.deliveries import Delivery
from queueing.drivers.amqp.driver import AmqpDriver
from queueing.drivers.amqp.errors import AmqpUnavailableError, PublishRefusedError
from queueing.drivers.amqp.messages import envelope_from_message, message_properties
from queueing.drivers.amqp.settings import (
    DEFAULT_PORT,
    DEFAULT_PREFETCH,
    DEFAULT_VHOST,
    connection_parameters,
)
from queueing.drivers.amqp.suspects import suspects_queue_name

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_PREFETCH",
    "DEFAULT_VHOST",
    "AmqpDriver",
    "AmqpUnavailableError",
    "Delivery",
    "PublishRefusedError",
    "connection_parameters",
    "envelope_from_message",
    "holding_delay",
    "holding_queue_name",
    "message_properties",
    "suspects_queue_name",
]
