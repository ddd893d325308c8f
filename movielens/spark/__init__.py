"""The Spark engine (`compute.engine: spark`): the stages that read and write rating tables, on Spark."""
