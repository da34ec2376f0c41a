"""`workset`: the command line of the workset monitor, for people and scripts.

It talks to the product's HTTPS API, signing every request with SigV4 from the standard AWS credentials, and uploads
workset folders to S3 with boto3. `workset --help` lists the commands.
"""
