"""Services outside the pipeline that more than one room asks: the campaign service
(``campaigns``), for the entry forwarder's markets and the web views' campaigns of an
event. Beside the rooms, not in one, so a sink and the web may both use it."""
