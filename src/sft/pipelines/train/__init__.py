from sft.pipelines.train.pipeline import create_follower_pipeline, create_pipeline

__all__ = ["create_follower_pipeline", "create_pipeline"]
