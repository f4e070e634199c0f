"""The model page: the serving model's card, its operating point and its plots."""

from __future__ import annotations

from fastapi import HTTPException, Request, Response, status
from fastapi.responses import HTMLResponse

from app.api.deps import RegistryDep
from app.api.routes.pages.errors import page_router
from app.api.routes.pages.model_views import PLOTS, card_view, operating_point_view, outliner_view
from app.api.routes.pages.rendering import render
from app.api.web_auth import PageUser

router = page_router()


@router.get("/model", response_class=HTMLResponse)
def model_page(request: Request, user: PageUser, registry: RegistryDep) -> Response:
    """The default model's card: training data, metrics with intervals, plots, intended use and limits."""
    classifier = registry.get()
    bundle = classifier.bundle
    plots = [
        {
            "name": name,
            "title": title,
            "alt": alt,
            "available": (bundle.path / f"{name}.png").is_file(),
        }
        for name, (title, alt) in PLOTS.items()
    ]
    return render(
        request,
        "model.html",
        title="Model",
        nav="model",
        card=card_view(classifier.model_card),
        operating_point=operating_point_view(
            classifier.operating_point,
            classifier.card_operating_point,
            classifier.model_card.study_outline_px if classifier.outlines_itself else None,
            classifier.config.image_size,
        ),
        plots=plots,
        models=registry.describe(),
        segmentation=outliner_view(registry.outliner(classifier), classifier),
    )


@router.get("/model/plots/{plot_name}.png")
def model_plot(plot_name: str, user: PageUser, registry: RegistryDep) -> Response:
    """A plot from the default model's bundle (ROC, calibration, confusion matrix)."""
    if plot_name not in PLOTS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No plot named {plot_name!r}.")
    path = registry.get().bundle.path / f"{plot_name}.png"
    if not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"The model has no {PLOTS[plot_name][0]} plot.")
    return Response(
        path.read_bytes(), media_type="image/png", headers={"Cache-Control": "private, max-age=300"}
    )
