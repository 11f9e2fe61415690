"""The local stack (`make dev`): moto's DynamoDB server, the tables, a demo seed, and the
template's routes served over HTTP through the very handler code the Lambdas run."""
