"""Projections of dotted paths (images_service/jobs/projection.py)."""

from images_service.jobs.projection import top_level_projection


def test_dotted_paths_project_their_top_level_field_once():
    assert top_level_projection(["media.gallery", "images", "media.cover.url", "info.name",
                                 ""]) == {"images": 1, "info": 1, "media": 1}
    assert top_level_projection([]) == {}
