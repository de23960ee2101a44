"""The emulated Lambda: execution environments run by the AWS Lambda Runtime Interface Emulator.

``elastic.ElasticPool`` starts environments on demand, as Lambda does. (The redesign of issue 15
moves the fixed pool, the single emulator, the Invoke API front and the cgroups here too; until
then they live in :mod:`local.emulator` and :mod:`local.cgroups`.)
"""

from local.lambda_env.elastic import DEFAULT_MAX_CONCURRENCY, ElasticPool

__all__ = ["DEFAULT_MAX_CONCURRENCY", "ElasticPool"]
