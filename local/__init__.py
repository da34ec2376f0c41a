"""The local stack: template.yaml's resources in an in-process AWS emulator, and the functions driven as AWS would.

- `local.stack.LocalStack` (and `python -m local.stack`, i.e. `make local`): the whole stack, in one process.
- `local.emulator.start_emulator`: moto's server, with each DynamoDB operation made atomic.
- `local.template.Template`: template.yaml read, its intrinsics resolved, its resources created.
- `local.driver.Driver`: the threads that do AWS's part (S3 notifications, the DynamoDB stream, schedules);
  `local.apigateway.ApiServer` serves the API over HTTP; `local.runtime` runs the handlers.
"""
