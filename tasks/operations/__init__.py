"""Operations: scoring registered versions, retraining against the champion, monitoring a deployed endpoint."""
