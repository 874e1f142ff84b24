"""/admin/: moderation, for tokens whose scope includes 'admin'."""

from flask_restx import Namespace, Resource

from .auth import BEARER_SECURITY, admin_claims
from .db import db
from .thoughts import thought_or_404

admin_namespace = Namespace("admin", description="Moderation; needs a token with the 'admin' scope")


@admin_namespace.route("/thoughts/<int:thought_id>/")
@admin_namespace.param("thought_id", "The thought's id")
class AdminThoughtItem(Resource):
    @admin_namespace.doc(security=BEARER_SECURITY)
    @admin_namespace.response(204, "Deleted")
    @admin_namespace.response(401, "No valid bearer token")
    @admin_namespace.response(403, "The token has no 'admin' scope")
    @admin_namespace.response(404, "No thought has this id")
    def delete(self, thought_id: int):
        """Delete anyone's thought."""
        admin_claims()
        db.session.delete(thought_or_404(thought_id))
        db.session.commit()
        return "", 204
