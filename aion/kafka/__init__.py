"""Kafka for aion: the kafka.yml file and what aion does with a cluster.

- :mod:`aion.kafka.config`: kafka.yml read, checked (findings with positions, as ``aionctl validate``
  shows them) and built into the immutable :class:`~aion.kafka.config.KafkaConfig`; the librdkafka
  settings of a connection, the password read through the secret backend;
- :mod:`aion.kafka.plans`: what ``aionctl kafka topics ensure`` and ``acls apply`` would change,
  computed from what the cluster has (pure);
- :mod:`aion.kafka.admin`: the calls to the cluster (confluent-kafka's AdminClient), their errors
  translated into aion's.

Importing this package loads none of them, and nothing here imports confluent_kafka until a client
is made.
"""
