"""The change-stream listener: MongoDB changes → ``change_stream`` jobs (contract §4).

Data flow, one module a step: :mod:`.stream` opens change streams (per collection on
nx-27017, per database on a replica set) → :mod:`.decide` applies the trigger rules to the
re-read document → :mod:`.enqueue` turns a decision into exactly one enqueued job →
:mod:`.checkpoint` saves resume tokens and scan progress; :mod:`.scan` is the catch-up scan
that covers what streams cannot, :mod:`.lease` elects one leader with a fencing epoch,
:mod:`.loop` is one leader term tying these together and :mod:`.process` the process itself
(signals, metrics endpoint, standby).
"""
