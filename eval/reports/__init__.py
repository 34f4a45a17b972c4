"""What a person reads: the quality report, the knowledge gaps, and the QA export for fine-tuning."""
